//! Names of accounts, models and deployments, validated once for every entry point.

/// Account, model and deployment names: lowercase letters, digits, `-`, `_` and `.`, starting
/// with a letter or digit, at most 100 characters (Replicate's own limits).
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} name must not be empty"));
    }
    if name.len() > 100 {
        return Err(format!("{what} name must be at most 100 characters"));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!(
            "{what} name must start with a lowercase letter or a digit"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(*c)))
    {
        return Err(format!(
            "{what} name may contain only lowercase letters, digits, '-', '_' and '.', not {c:?}"
        ));
    }
    Ok(())
}

/// A model's links (GitHub, paper, license, cover image): absolute http(s) addresses only, so a
/// page that shows them can never be handed a `javascript:` link.
pub fn validate_link(what: &str, link: &str) -> Result<(), String> {
    let lower = link.to_ascii_lowercase();
    let scheme_ok = lower.starts_with("https://") || lower.starts_with("http://");
    let host = link.split_once("://").map(|(_, r)| r).unwrap_or("");
    if !scheme_ok || host.is_empty() || link.chars().any(char::is_whitespace) || link.len() > 2000 {
        return Err(format!("{what} must be an http:// or https:// address"));
    }
    Ok(())
}

/// Top-level paths of the web UI and the API: an account by one of these names would have its
/// model pages hidden behind them.
pub const RESERVED_ACCOUNT_NAMES: &[&str] = &[
    "account",
    "api",
    "deployments",
    "files",
    "internal",
    "login",
    "logout",
    "openapi.json",
    "p",
    "static",
    "v1",
];

/// An account name: a name, and not one the server's own pages use.
pub fn validate_account_name(what: &str, name: &str) -> Result<(), String> {
    validate_name(what, name)?;
    if RESERVED_ACCOUNT_NAMES.contains(&name) {
        return Err(format!(
            "{what} name {name:?} is reserved for the server's own pages"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{validate_account_name, validate_link, validate_name};

    #[test]
    fn accepts_and_refuses() {
        assert!(validate_name("model", "hello-world_2.0").is_ok());
        for bad in ["", "Hello", "-x", "a/b", "a b", "..", &"x".repeat(101)] {
            assert!(validate_name("model", bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("model", "login").is_ok());
        assert!(validate_account_name("user", "login").is_err());
        assert!(validate_account_name("user", "alice").is_ok());
        assert!(validate_link("link", "https://github.com/x").is_ok());
        for bad in [
            "javascript:alert(1)",
            "github.com/x",
            "https://",
            "http://a b",
            "ftp://x",
        ] {
            assert!(validate_link("link", bad).is_err(), "{bad:?}");
        }
    }
}
