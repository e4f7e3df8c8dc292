//! The playground's form, generated from a version's input schema, and the way back from the
//! submitted form to JSON input.
use serde::Serialize;
use serde_json::{Map, Value};

use super::form::Form;

#[derive(Serialize)]
pub struct Field {
    pub name: String,
    pub title: String,
    pub description: Option<String>,
    /// text, textarea, number, integer, checkbox, select, json
    pub widget: &'static str,
    pub required: bool,
    pub value: String,
    pub checked: bool,
    pub choices: Vec<String>,
    pub min: Option<String>,
    pub max: Option<String>,
    pub error: Option<String>,
}

fn resolve<'a>(root: &'a Value, prop: &'a Value) -> &'a Value {
    // Cog writes enums as `allOf: [{"$ref": "#/components/schemas/name"}]`.
    let r = prop
        .get("$ref")
        .or_else(|| {
            prop.get("allOf")
                .and_then(|a| a.get(0))
                .and_then(|a| a.get("$ref"))
        })
        .and_then(Value::as_str);
    match r.and_then(|r| r.strip_prefix("#/")) {
        Some(path) => root.pointer(&format!("/{path}")).unwrap_or(prop),
        None => prop,
    }
}

fn input_schema(schema: &Value) -> Option<&Value> {
    schema.pointer("/components/schemas/Input")
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

fn ordered(schema: &Value) -> Vec<(&String, &Value)> {
    let Some(props) = input_schema(schema)
        .and_then(|i| i.get("properties"))
        .and_then(Value::as_object)
    else {
        return vec![];
    };
    let mut fields: Vec<_> = props.iter().collect();
    fields.sort_by_key(|(_, p)| p.get("x-order").and_then(Value::as_i64).unwrap_or(i64::MAX));
    fields
}

fn kind(root: &Value, prop: &Value) -> &'static str {
    let t = resolve(root, prop);
    if t.get("enum").is_some() {
        return "select";
    }
    match t.get("type").and_then(Value::as_str) {
        Some("integer") => "integer",
        Some("number") => "number",
        Some("boolean") => "checkbox",
        Some("string") if t.get("format").and_then(Value::as_str) == Some("uri") => "text",
        Some("string") => "textarea",
        _ => "json",
    }
}

/// The fields of the form, filled from `values` (a submitted form) or the schema's defaults.
pub fn fields(schema: &Value, values: Option<&Form>, errors: &[(String, String)]) -> Vec<Field> {
    let required: Vec<&str> = input_schema(schema)
        .and_then(|i| i.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ordered(schema)
        .into_iter()
        .map(|(name, prop)| {
            let t = resolve(schema, prop);
            let widget = kind(schema, prop);
            let default = prop.get("default").or_else(|| t.get("default"));
            let value = match values {
                Some(f) => f.get(name).unwrap_or_default().to_string(),
                None => default.map(show).unwrap_or_default(),
            };
            let checked = match values {
                Some(f) => f.get(name).is_some(),
                None => default.and_then(Value::as_bool).unwrap_or(false),
            };
            Field {
                name: name.clone(),
                title: prop
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or(name)
                    .to_string(),
                description: prop
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                widget,
                required: required.contains(&name.as_str()),
                value,
                checked,
                choices: t
                    .get("enum")
                    .and_then(Value::as_array)
                    .map(|e| e.iter().map(show).collect())
                    .unwrap_or_default(),
                min: prop.get("minimum").map(show),
                max: prop.get("maximum").map(show),
                error: errors
                    .iter()
                    .find(|(f, _)| f == name)
                    .map(|(_, e)| e.clone()),
            }
        })
        .collect()
}

/// The submitted form as JSON input, typed by the schema. A blank field is left out so its
/// default applies; a value that does not parse is passed on as text, for the version's own
/// validation to report in its words.
pub fn input(schema: &Value, form: &Form) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, prop) in ordered(schema) {
        let widget = kind(schema, prop);
        if widget == "checkbox" {
            out.insert(name.clone(), Value::Bool(form.get(name).is_some()));
            continue;
        }
        let Some(raw) = form.get(name).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let t = resolve(schema, prop);
        let v = match (widget, t.get("type").and_then(Value::as_str)) {
            ("integer", _) | (_, Some("integer")) => {
                raw.trim().parse::<i64>().map(Value::from).ok()
            }
            ("number", _) | (_, Some("number")) => raw
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number)),
            ("json", _) => serde_json::from_str(raw).ok(),
            _ => None,
        };
        out.insert(
            name.clone(),
            v.unwrap_or_else(|| Value::String(raw.to_string())),
        );
    }
    out
}

/// An input to show in the API snippets: the defaults, and a placeholder for what is required.
pub fn example(schema: &Value) -> Map<String, Value> {
    let required: Vec<&str> = input_schema(schema)
        .and_then(|i| i.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Map::new();
    for (name, prop) in ordered(schema) {
        if let Some(d) = prop.get("default") {
            out.insert(name.clone(), d.clone());
        } else if required.contains(&name.as_str()) {
            let t = resolve(schema, prop);
            let v = match t.get("type").and_then(Value::as_str) {
                Some("integer") | Some("number") => Value::from(1),
                Some("boolean") => Value::Bool(true),
                _ => Value::String("...".into()),
            };
            out.insert(name.clone(), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"components": {"schemas": {
            "Input": {"type": "object", "required": ["prompt"], "properties": {
                "repeat": {"type": "integer", "title": "Repeat", "default": 1, "minimum": 1, "maximum": 5, "x-order": 1},
                "prompt": {"type": "string", "title": "Prompt", "x-order": 0},
                "loud": {"type": "boolean", "title": "Loud", "x-order": 2},
                "color": {"allOf": [{"$ref": "#/components/schemas/color"}], "x-order": 3}
            }},
            "color": {"type": "string", "enum": ["red", "blue"]}
        }}})
    }

    #[test]
    fn form_fields_follow_the_schema() {
        let f = fields(&schema(), None, &[]);
        let names: Vec<_> = f.iter().map(|f| (f.name.as_str(), f.widget)).collect();
        assert_eq!(
            names,
            [
                ("prompt", "textarea"),
                ("repeat", "integer"),
                ("loud", "checkbox"),
                ("color", "select")
            ]
        );
        assert!(f[0].required);
        assert_eq!(f[1].value, "1");
        assert_eq!(f[3].choices, ["red", "blue"]);
    }

    #[test]
    fn forms_become_typed_input() {
        let form = Form::parse(b"prompt=hi&repeat=3&color=red");
        let i = input(&schema(), &form);
        assert_eq!(
            Value::Object(i),
            json!({"prompt": "hi", "repeat": 3, "loud": false, "color": "red"})
        );
        let form = Form::parse(b"prompt=&repeat=lots&loud=on");
        let i = input(&schema(), &form);
        assert_eq!(Value::Object(i), json!({"repeat": "lots", "loud": true}));
    }
}
