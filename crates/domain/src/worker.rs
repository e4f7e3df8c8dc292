//! Workers of a cluster: what each offers, and which queued jobs it may take.

/// What a worker offers: hardware names from `/v1/hardware` (empty: every kind) and whether
/// it has a GPU to give.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    pub hardware: Vec<String>,
    pub gpu: bool,
}

impl Offer {
    /// A worker has a GPU to give when it has GPUs at all and, when it names its hardware,
    /// names a GPU kind: one that offers only `cpu` keeps its GPUs out of the queue.
    pub fn new(hardware: Vec<String>, gpus: usize) -> Self {
        let gpu = gpus > 0 && (hardware.is_empty() || hardware.iter().any(|h| is_gpu(h)));
        Offer { hardware, gpu }
    }

    /// One machine that runs everything (`modelyard serve` with neither `--role` nor
    /// `--hardware`) takes every job: a version that asks for a GPU runs on its GPUs, or on its
    /// CPU when it has none, as it did before there were workers to choose from.
    pub fn everything() -> Self {
        Offer {
            hardware: Vec::new(),
            gpu: true,
        }
    }

    /// Whether a job needing `hardware` (its deployment's, or its model's) and perhaps a GPU
    /// may run here. Storage applies the same rule in SQL when it reads the queue.
    pub fn takes(&self, hardware: &str, gpu: bool) -> bool {
        (self.hardware.is_empty() || self.hardware.iter().any(|h| h == hardware))
            && (self.gpu || !gpu)
    }
}

pub use crate::hardware::is_gpu;

/// A worker as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub id: String,
    pub offer: Offer,
    pub gpus: i64,
    pub max_servers: i64,
    /// The Cog servers it runs, as of its last heartbeat.
    pub servers: i64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_at: chrono::DateTime<chrono::Utc>,
}

/// What a job waits for, to tell whether any live worker could take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub job_id: String,
    pub hardware: String,
    pub gpu: bool,
}

impl Need {
    /// The line a job's logs get while no live worker offers what it needs.
    pub fn waiting_line(&self) -> String {
        if self.gpu && !is_gpu(&self.hardware) {
            format!(
                "Waiting for a worker that offers {} with a GPU: none is connected.\n",
                self.hardware
            )
        } else {
            format!(
                "Waiting for a worker that offers {}: none is connected.\n",
                self.hardware
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_and_gpu_decide() {
        let every = Offer::new(vec![], 0);
        assert!(every.takes("cpu", false) && every.takes("gpu-t4", false));
        assert!(!every.takes("gpu-t4", true));
        let cpu_with_gpus = Offer::new(vec!["cpu".into()], 2);
        assert!(!cpu_with_gpus.gpu);
        let t4 = Offer::new(vec!["gpu-t4".into()], 1);
        assert!(t4.takes("gpu-t4", true) && !t4.takes("cpu", false));
        assert!(!Offer::new(vec!["gpu-t4".into()], 0).gpu);
        assert!(Offer::new(vec![], 1).takes("cpu", true));
    }
}
