//! Reading `-i key=value` inputs and the names of things on the command line.
use serde_json::{Map, Value};

/// `key=value` pairs into an input object: a value that parses as JSON is that JSON
/// (`n=3`, `flag=true`, `tags=["a","b"]`, `s="3"`), anything else is the text as given.
pub fn parse_inputs(pairs: &[String]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("the input {pair:?} must be written KEY=VALUE"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("the input {pair:?} has no name before the '='"));
        }
        let value = serde_json::from_str::<Value>(value)
            .unwrap_or_else(|_| Value::String(value.to_string()));
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// "owner/name".
pub fn model(s: &str) -> Result<(&str, &str), String> {
    modelyard_client::split_model(s)
        .ok_or_else(|| format!("{s:?} is not a model name: write it as OWNER/NAME"))
}

/// "owner/name" of a deployment.
pub fn deployment(s: &str) -> Result<(&str, &str), String> {
    modelyard_client::split_model(s)
        .ok_or_else(|| format!("{s:?} is not a deployment name: write it as OWNER/NAME"))
}

/// "owner/name:version_id".
pub fn version(s: &str) -> Result<(&str, &str, &str), String> {
    modelyard_client::split_version(s)
        .ok_or_else(|| format!("{s:?} is not a version: write it as OWNER/NAME:VERSION_ID"))
}

/// A model or a version, as `trash restore` and `trash purge` take them.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    Model(&'a str, &'a str),
    Version(&'a str, &'a str, &'a str),
}

/// "owner/name" or "owner/name:version_id".
pub fn item(s: &str) -> Result<Item<'_>, String> {
    if s.contains(':') {
        let (o, n, v) = version(s)?;
        Ok(Item::Version(o, n, v))
    } else {
        let (o, n) = model(s).map_err(|_| {
            format!(
                "{s:?} is neither a model nor a version: write OWNER/NAME or OWNER/NAME:VERSION_ID"
            )
        })?;
        Ok(Item::Model(o, n))
    }
}

/// What `predictions create` runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// "owner/name:id" or a bare id, sent as given to POST /v1/predictions.
    Version(&'a str),
    /// "owner/name": the model's latest version.
    Model(&'a str, &'a str),
}

pub fn target(s: &str) -> Result<Target<'_>, String> {
    if s.contains(':') {
        version(s)?;
        Ok(Target::Version(s))
    } else if s.contains('/') {
        let (o, n) = model(s)?;
        Ok(Target::Model(o, n))
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(Target::Version(s))
    } else {
        Err(format!(
            "{s:?} is not a version: write OWNER/NAME:VERSION_ID, OWNER/NAME, or a version id"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn trash_items_are_models_or_versions() {
        assert_eq!(item("a/b"), Ok(Item::Model("a", "b")));
        assert_eq!(item("a/b:v1"), Ok(Item::Version("a", "b", "v1")));
        assert!(item("ab").unwrap_err().contains("OWNER/NAME:VERSION_ID"));
        assert!(item("a/b:").is_err());
    }

    #[test]
    fn inputs_are_json_when_they_parse() {
        let m = parse_inputs(&strings(&[
            "n=3",
            "text=hello world",
            "flag=true",
            "quoted=\"3\"",
            "list=[1,2]",
            "eq=a=b",
            "empty=",
            "obj={\"a\":1}",
        ]))
        .unwrap();
        assert_eq!(
            Value::Object(m),
            json!({
                "n": 3, "text": "hello world", "flag": true, "quoted": "3", "list": [1, 2],
                "eq": "a=b", "empty": "", "obj": {"a": 1}
            })
        );
    }

    #[test]
    fn bad_inputs_are_explained() {
        assert!(parse_inputs(&strings(&["novalue"]))
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(parse_inputs(&strings(&["=3"])).is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(target("a/b:123").unwrap(), Target::Version("a/b:123"));
        assert_eq!(target("a/b").unwrap(), Target::Model("a", "b"));
        assert_eq!(target("abc123").unwrap(), Target::Version("abc123"));
        assert!(target("a/b:").is_err());
        assert!(target("a/b/c").is_err());
        assert!(target("").is_err());
        assert_eq!(version("a/b:v").unwrap(), ("a", "b", "v"));
        assert!(model("ab").is_err());
    }
}
