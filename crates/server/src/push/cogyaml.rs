//! Reading cog.yaml from an uploaded tree, and checking what it names is there.
use std::path::Path;

pub use modelyard_domain::cog_yaml::CogYaml;

pub fn read(tree: &Path) -> Result<CogYaml, String> {
    let path = tree.join("cog.yaml");
    if !path.is_file() {
        return Err("the project has no cog.yaml at its root".into());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot be read: {e}"))?;
    let cog = modelyard_domain::cog_yaml::parse(&text)?;
    check_python_packages(&cog.python_packages)?;
    for r in std::iter::once(&cog.predict).chain(cog.train.as_ref()) {
        let (file, class) = r
            .split_once(':')
            .ok_or(format!("{r:?} must look like file.py:Name"))?;
        if file.split('/').any(|p| p == "..") || file.starts_with('/') {
            return Err(format!("{r:?} must name a file inside the project"));
        }
        if class.is_empty() || !tree.join(file).is_file() {
            return Err(format!("{r:?} names {file}, which is not in the project"));
        }
    }
    Ok(cog)
}

/// Checks each `build.python_packages` entry is a PEP 508 requirement and nothing pip would
/// read otherwise: no option (`-r file`, `--index-url ...`), no local path, no URL pip would
/// read from this machine (`file:`). Refused before anything is built, naming the entry.
pub fn check_python_packages(packages: &[String]) -> Result<(), String> {
    for p in packages {
        let refuse = |why: &str| {
            format!(
                "build.python_packages entry {p:?} is not accepted: {why}; list requirements \
                 such as \"numpy==1.26.4\" or \"torch>=2\""
            )
        };
        let t = p.trim();
        if t.starts_with('-') {
            return Err(refuse("pip options are not accepted"));
        }
        let req: pep508_rs::Requirement = t.parse().map_err(|e: pep508_rs::Pep508Error| {
            refuse(&format!("it is not a PEP 508 requirement ({})", e.message))
        })?;
        if let Some(pep508_rs::VersionOrUrl::Url(u)) = &req.version_or_url {
            if !matches!(u.scheme(), "https" | "http" | "git+https") {
                return Err(refuse("only http(s) and git+https URLs may be named"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_python_packages;

    fn ok(p: &str) -> bool {
        check_python_packages(&[p.to_string()]).is_ok()
    }

    #[test]
    fn requirements_pass_and_anything_else_is_refused_by_name() {
        for good in [
            "numpy",
            "six==1.16.0",
            "torch>=2,<3",
            "requests[socks]~=2.31",
            "pillow; python_version >= '3.8'",
            "pkg @ https://example.com/pkg-1.0.tar.gz",
            "pkg @ git+https://example.com/pkg.git@v1",
        ] {
            assert!(ok(good), "{good}");
        }
        for bad in [
            "-r /etc/passwd",
            "--index-url=https://evil.example/simple",
            "-e .",
            "--extra-index-url https://x",
            " -rfile",
            "./local/dir",
            "/abs/path",
            "pkg @ file:///etc/passwd",
            "pkg @ git+file:///srv/repo",
            "pkg @ ../other",
            "",
            "numpy numpy",
            "x==1 --hash=sha256:00",
        ] {
            assert!(!ok(bad), "{bad:?} was accepted");
        }
        let err = check_python_packages(&["six".into(), "-r secrets.txt".into()]).unwrap_err();
        assert!(err.contains("\"-r secrets.txt\""), "{err}");
    }
}
