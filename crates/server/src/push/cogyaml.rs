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
