//! The few keys of cog.yaml that pushing needs.
use std::path::Path;

pub struct CogYaml {
    /// e.g. "predict.py:Predictor" (`predict:` or Cog 0.23's `run:`)
    pub predict: String,
    pub train: Option<String>,
}

fn unquote(v: &str) -> &str {
    let v = v.split(" #").next().unwrap_or("").trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v)
}

/// Reads the top-level `predict`/`run` and `train` entries.
pub fn read(tree: &Path) -> Result<CogYaml, String> {
    let path = tree.join("cog.yaml");
    if !path.is_file() {
        return Err("the project has no cog.yaml at its root".into());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot be read: {e}"))?;
    let (mut predict, mut train) = (None, None);
    for line in text.lines() {
        if line.starts_with([' ', '\t', '#']) {
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            let value = unquote(value);
            match key.trim() {
                "predict" | "run" if !value.is_empty() => predict = Some(value.to_string()),
                "train" if !value.is_empty() => train = Some(value.to_string()),
                _ => {}
            }
        }
    }
    let predict = predict.ok_or("has no predict entry (for example predict: \"predict.py:Predictor\")")?;
    for r in std::iter::once(&predict).chain(train.as_ref()) {
        let (file, class) = r.split_once(':').ok_or(format!("{r:?} must look like file.py:Name"))?;
        if class.is_empty() || !tree.join(file).is_file() {
            return Err(format!("{r:?} names {file}, which is not in the project"));
        }
        if file.split('/').any(|p| p == "..") || file.starts_with('/') {
            return Err(format!("{r:?} must name a file inside the project"));
        }
    }
    Ok(CogYaml { predict, train })
}
