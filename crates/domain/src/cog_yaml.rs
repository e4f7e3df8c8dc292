//! The keys of cog.yaml the platform reads. A small reader for the few shapes Cog documents,
//! so the platform carries no YAML library for three keys.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CogYaml {
    /// e.g. "predict.py:Predictor" (`predict:` or Cog 0.23's `run:`)
    pub predict: String,
    pub train: Option<String>,
    /// `build.python_packages`, as pip requirements.
    pub python_packages: Vec<String>,
    /// `build.gpu`: the model needs a GPU, so it runs only where one is offered.
    pub gpu: bool,
}

fn unquote(v: &str) -> &str {
    let v = v.split(" #").next().unwrap_or("").trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

pub fn parse(text: &str) -> Result<CogYaml, String> {
    let (mut predict, mut train, mut packages) = (None, None, Vec::new());
    let mut gpu = false;
    let mut section = "";
    let mut list_indent: Option<usize> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(li) = list_indent {
            if indent(line) >= li && trimmed.starts_with('-') {
                packages.push(unquote(trimmed.trim_start_matches('-')).to_string());
                continue;
            }
            list_indent = None;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        let value = unquote(value);
        if indent(line) == 0 {
            section = match key.trim() {
                "build" => "build",
                _ => "",
            };
            match key.trim() {
                "predict" | "run" if !value.is_empty() => predict = Some(value.to_string()),
                "train" if !value.is_empty() => train = Some(value.to_string()),
                _ => {}
            }
        } else if section == "build" && key.trim() == "gpu" {
            gpu = match value.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => true,
                "false" | "no" | "off" | "" => false,
                other => return Err(format!("build.gpu must be true or false, not {other:?}")),
            };
        } else if section == "build" && key.trim() == "python_packages" {
            if let Some(inline) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                packages.extend(
                    inline
                        .split(',')
                        .map(|p| unquote(p).to_string())
                        .filter(|p| !p.is_empty()),
                );
            } else {
                list_indent = Some(indent(line));
            }
        }
    }
    let predict =
        predict.ok_or("has no predict entry (for example predict: \"predict.py:Predictor\")")?;
    Ok(CogYaml {
        predict,
        train,
        python_packages: packages,
        gpu,
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_predict_train_and_packages() {
        let y = parse(
            "build:\n  python_version: \"3.11\"\n  python_packages:\n    - \"six==1.16.0\" # pinned\n    - 'idna'\n  run:\n    - echo\npredict: \"predict.py:Predictor\"\ntrain: train.py:train\n",
        )
        .unwrap();
        assert_eq!(y.predict, "predict.py:Predictor");
        assert_eq!(y.train.as_deref(), Some("train.py:train"));
        assert_eq!(y.python_packages, ["six==1.16.0", "idna"]);
        let y = parse("build:\n  python_packages: [a, \"b\"]\nrun: p.py:P\n").unwrap();
        assert_eq!((y.predict.as_str(), y.python_packages.len()), ("p.py:P", 2));
        assert!(parse("build:\n  gpu: false\n").is_err());
        assert!(!y.gpu);
    }

    #[test]
    fn reads_gpu() {
        let y = parse("build:\n  gpu: true\n  python_packages: [a]\npredict: p.py:P\n").unwrap();
        assert!(y.gpu);
        let y = parse("build:\n  gpu: false\npredict: p.py:P\n").unwrap();
        assert!(!y.gpu);
        assert!(parse("build:\n  gpu: maybe\npredict: p.py:P\n").is_err());
    }
}
