//! Inputs validated against the version's own schema (Cog's OpenAPI document), so a bad input
//! is refused with every invalid field before anything is recorded.
use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use modelyard_domain::Version;
use serde_json::Value;

use super::error::{InvalidField, OpError, OpResult};
use crate::state::AppState;

#[derive(Clone, Copy)]
pub enum Schema {
    Predict,
    Train,
}

impl Schema {
    fn name(self) -> &'static str {
        match self {
            Schema::Predict => "Input",
            Schema::Train => "TrainingInput",
        }
    }
}

fn validator(
    s: &AppState,
    v: &Version,
    which: Schema,
) -> OpResult<Option<Arc<jsonschema::Validator>>> {
    let key = (v.id.clone(), which.name());
    if let Some(found) = s.validators.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(Some(found));
    }
    if v.openapi_schema
        .pointer(&format!("/components/schemas/{}", which.name()))
        .is_none()
    {
        return match which {
            Schema::Predict => Ok(None),
            Schema::Train => Err(OpError::invalid(
                "version",
                format!(
                    "version {} cannot be trained: its cog.yaml has no train entry",
                    v.id
                ),
            )),
        };
    }
    let mut root = (*v.openapi_schema).clone();
    root["$ref"] = Value::String(format!("#/components/schemas/{}", which.name()));
    let compiled = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .map_err(|e| {
            OpError::Internal(format!("schema of version {} does not compile: {e}", v.id))
        })?;
    let compiled = Arc::new(compiled);
    if let Ok(mut m) = s.validators.lock() {
        m.insert(key, compiled.clone());
    }
    Ok(Some(compiled))
}

/// Checks `input` and returns it as it will be stored. A `null` counts as leaving the input
/// out, as Cog treats it.
pub fn input(s: &AppState, v: &Version, which: Schema, input: Value) -> OpResult<Value> {
    let input = match input {
        Value::Object(mut m) => {
            m.retain(|_, v| !v.is_null());
            Value::Object(m)
        }
        other => other,
    };
    let Some(validator) = validator(s, v, which)? else {
        return Ok(input);
    };
    let fields: Vec<InvalidField> = validator
        .iter_errors(&input)
        .map(|e| match e.kind() {
            ValidationErrorKind::Required { property } => {
                let p = property.as_str().unwrap_or_default();
                InvalidField {
                    kind: "required".into(),
                    field: format!("input.{p}"),
                    description: format!("{p} is required"),
                }
            }
            _ => {
                let path = e.instance_path().to_string();
                let field = path.trim_start_matches('/').replace('/', ".");
                InvalidField {
                    kind: "invalid".into(),
                    field: if field.is_empty() {
                        "input".into()
                    } else {
                        format!("input.{field}")
                    },
                    description: e.to_string(),
                }
            }
        })
        .collect();
    if fields.is_empty() {
        return Ok(input);
    }
    Err(OpError::Invalid {
        detail: fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.description))
            .collect::<Vec<_>>()
            .join("; "),
        fields,
    })
}
