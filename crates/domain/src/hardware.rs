//! The hardware a model or deployment may ask for: Replicate's SKUs. A job runs only on a
//! worker that offers its hardware (`modelyard serve --hardware`); one machine that runs
//! everything offers every kind, and its GPUs (`--gpus`) go to the versions that ask for one.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardware {
    /// What the API and `--hardware` call it.
    pub sku: &'static str,
    /// What people read.
    pub name: &'static str,
    /// GPUs a server on it gets (0: CPU only).
    pub gpus: u32,
}

pub const CATALOG: &[Hardware] = &[
    Hardware {
        sku: "cpu",
        name: "CPU",
        gpus: 0,
    },
    Hardware {
        sku: "gpu-t4",
        name: "Nvidia T4 GPU",
        gpus: 1,
    },
    Hardware {
        sku: "gpu-l40s",
        name: "Nvidia L40S GPU",
        gpus: 1,
    },
    Hardware {
        sku: "gpu-l40s-2x",
        name: "2x Nvidia L40S GPU",
        gpus: 2,
    },
    Hardware {
        sku: "gpu-a100-large",
        name: "Nvidia A100 (80GB) GPU",
        gpus: 1,
    },
    Hardware {
        sku: "gpu-a100-large-2x",
        name: "2x Nvidia A100 (80GB) GPU",
        gpus: 2,
    },
    Hardware {
        sku: "gpu-h100",
        name: "Nvidia H100 GPU",
        gpus: 1,
    },
];

/// The hardware with this SKU, if it is one.
pub fn find(sku: &str) -> Option<&'static Hardware> {
    CATALOG.iter().find(|h| h.sku == sku)
}

/// Whether a SKU names GPU hardware.
pub fn is_gpu(sku: &str) -> bool {
    find(sku).is_some_and(|h| h.gpus > 0)
}

/// Checks a list of SKUs (`--hardware`): `Err` names the first unknown one and what is known.
pub fn check_all(skus: &[String]) -> Result<(), String> {
    match skus.iter().find(|s| find(s).is_none()) {
        None => Ok(()),
        Some(bad) => Err(format!(
            "unknown hardware {bad:?}: use {}",
            CATALOG.iter().map(|h| h.sku).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_cpu_and_gpus() {
        assert!(!is_gpu("cpu"));
        assert!(is_gpu("gpu-a100-large"));
        assert_eq!(find("gpu-l40s-2x").map(|h| h.gpus), Some(2));
        assert!(!is_gpu("gpu-unknown"));
        assert!(check_all(&["cpu".into(), "gpu-t4".into()]).is_ok());
        let e = check_all(&["cpu".into(), "tpu".into()]).unwrap_err();
        assert!(e.contains("\"tpu\"") && e.contains("gpu-h100"), "{e}");
    }
}
