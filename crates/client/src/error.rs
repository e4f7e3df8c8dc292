use serde::Deserialize;
use serde_json::Value;

use crate::types::{Blocker, InvalidField};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error (problem+json).
    #[error("{0}")]
    Api(Box<ApiError>),
    /// The request did not get an answer: the server is unreachable, the connection broke...
    #[error("{}", chain(.0))]
    Http(reqwest::Error),
    /// The server answered 2xx with a body this client cannot read.
    #[error("the server's answer could not be read: {message}")]
    Decode { message: String, body: String },
    /// The directory to push could not be packed.
    #[error("could not pack {path}: {source}")]
    Pack {
        path: String,
        source: std::io::Error,
    },
    /// A bad argument, such as a base URL that is not a URL.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The API error, when the server answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|e| e.status)
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error::Http(e)
    }
}

/// reqwest's message alone says little ("error sending request"); the causes say why.
fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// An error answer: the HTTP status and the fields of the problem+json body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The problem's title ("Deletion blocked"), or the status's reason phrase.
    pub title: String,
    /// The problem's detail, or the body's text when it was not problem+json.
    pub detail: String,
    /// Everything that blocks a refused deletion.
    pub blockers: Vec<Blocker>,
    /// The fields that failed validation (422).
    pub invalid_fields: Vec<InvalidField>,
    /// The body as received.
    pub body: String,
}

impl std::fmt::Display for ApiError {
    /// "Title: detail".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.title.is_empty(), self.detail.is_empty()) {
            (false, false) => write!(f, "{}: {}", self.title, self.detail),
            (false, true) => write!(f, "{}", self.title),
            (true, false) => write!(f, "{}", self.detail),
            (true, true) => write!(f, "HTTP {}", self.status),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Problem {
    title: Option<String>,
    detail: Option<Value>,
    blockers: Vec<Blocker>,
    invalid_fields: Vec<InvalidField>,
}

impl ApiError {
    /// Reads an error answer: problem+json when it is, whatever text it is otherwise.
    pub fn from_body(status: u16, reason: Option<&str>, body: &str) -> ApiError {
        let problem = serde_json::from_str::<Problem>(body).ok();
        let (title, detail, blockers, invalid_fields) = match problem {
            Some(p) => {
                let detail = match p.detail {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s,
                    // FastAPI-style validation details are a list.
                    Some(v) => v.to_string(),
                };
                (p.title, detail, p.blockers, p.invalid_fields)
            }
            None => (None, truncate(body.trim(), 500), vec![], vec![]),
        };
        ApiError {
            status,
            title: title
                .filter(|t| !t.is_empty())
                .or_else(|| reason.map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}")),
            detail,
            blockers,
            invalid_fields,
            body: body.to_string(),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_json_with_blockers() {
        let body = r#"{"title":"Deletion blocked","status":409,"detail":"The model a/m cannot be deleted.",
            "blockers":[{"kind":"public","detail":"a/m is public.","model":"a/m"}]}"#;
        let e = ApiError::from_body(409, Some("Conflict"), body);
        assert_eq!(e.title, "Deletion blocked");
        assert_eq!(e.blockers.len(), 1);
        assert_eq!(e.blockers[0].model.as_deref(), Some("a/m"));
        assert_eq!(
            e.to_string(),
            "Deletion blocked: The model a/m cannot be deleted."
        );
    }

    #[test]
    fn invalid_fields_and_plain_text() {
        let body = r#"{"title":"Input validation failed","status":422,"detail":"name: bad",
            "invalid_fields":[{"type":"invalid","field":"name","description":"bad"}]}"#;
        let e = ApiError::from_body(422, None, body);
        assert_eq!(e.invalid_fields[0].field, "name");
        let e = ApiError::from_body(502, Some("Bad Gateway"), "upstream down\n");
        assert_eq!(e.to_string(), "Bad Gateway: upstream down");
        let e = ApiError::from_body(429, Some("Too Many Requests"), r#"{"detail":"slow down"}"#);
        assert_eq!(e.to_string(), "Too Many Requests: slow down");
    }
}
