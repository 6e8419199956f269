//! Checks on well-formed input that the API refuses with 422.

use std::collections::BTreeMap;

use crate::error::ApiError;

pub const MAX_TEXT: usize = 1024 * 1024;
const MAX_SECRETS: usize = 100;
const MAX_SECRET_VALUE: usize = 64 * 1024;
const MAX_METADATA: usize = 64 * 1024;

/// Operator and principal names: 1–64 of `A-Z a-z 0-9 . _ -`, starting alphanumeric.
pub fn principal_name(field: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "{field}: must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

pub fn new_password(pass: &str) -> Result<(), ApiError> {
    let n = pass.chars().count();
    if !(8..=1024).contains(&n) {
        return Err(ApiError::unprocessable(
            "pass: must be between 8 and 1024 characters",
        ));
    }
    Ok(())
}

pub fn text(field: &str, value: &Option<String>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > max => Err(ApiError::unprocessable(format!(
            "{field}: longer than {max} bytes"
        ))),
        Some(v) => no_nul(field, v),
        None => Ok(()),
    }
}

/// PostgreSQL cannot store NUL in text columns; no database gets one.
fn no_nul(field: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::unprocessable(format!(
            "{field}: must not contain NUL characters"
        )));
    }
    Ok(())
}

pub fn session_name(name: &Option<String>) -> Result<(), ApiError> {
    match name {
        Some(n) if n.trim().is_empty() => Err(ApiError::unprocessable("name: must not be blank")),
        Some(n) if n.chars().count() > 255 => {
            Err(ApiError::unprocessable("name: longer than 255 characters"))
        }
        Some(n) => no_nul("name", n),
        None => Ok(()),
    }
}

/// Secret names become environment variables and file names inside the computer.
pub fn secrets(secrets: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if secrets.len() > MAX_SECRETS {
        return Err(ApiError::unprocessable(format!(
            "secrets: at most {MAX_SECRETS} secrets"
        )));
    }
    for (name, value) in secrets {
        let valid = !name.is_empty()
            && name.len() <= 128
            && !name.as_bytes()[0].is_ascii_digit()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ApiError::unprocessable(format!(
                "secrets: '{name}' is not a valid name (letters, digits and '_', not starting with a digit)"
            )));
        }
        if value.len() > MAX_SECRET_VALUE || value.contains('\0') {
            return Err(ApiError::unprocessable(format!(
                "secrets.{name}: value longer than {MAX_SECRET_VALUE} bytes or contains NUL"
            )));
        }
    }
    Ok(())
}

/// Metadata is a JSON object of bounded size.
pub fn metadata(value: &Option<serde_json::Value>) -> Result<serde_json::Value, ApiError> {
    match value {
        None => Ok(serde_json::Value::Object(Default::default())),
        Some(v @ serde_json::Value::Object(_)) => {
            if v.to_string().len() > MAX_METADATA {
                return Err(ApiError::unprocessable(format!(
                    "metadata: larger than {MAX_METADATA} bytes"
                )));
            }
            Ok(v.clone())
        }
        Some(_) => Err(ApiError::unprocessable("metadata: must be a JSON object")),
    }
}

pub fn content(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::unprocessable(format!(
            "{field}: must not be empty"
        )));
    }
    if value.len() > MAX_TEXT {
        return Err(ApiError::unprocessable(format!(
            "{field}: longer than {MAX_TEXT} bytes"
        )));
    }
    no_nul(field, value)
}

/// A session's limits: each between a floor a desktop needs and the
/// server's own value.
pub fn limits(
    limits: &raworc_api::SessionLimits,
    config: &crate::config::ServerConfig,
) -> Result<(), ApiError> {
    let checks = [
        (
            "memory_mb",
            limits.memory_mb,
            256,
            config.computer_memory_mb,
        ),
        ("pids", limits.pids, 64, config.computer_pids),
        (
            "millicores",
            limits.millicores,
            100,
            config.computer_millicores,
        ),
    ];
    for (field, value, floor, max) in checks {
        if let Some(v) = value {
            if v < floor || v > max {
                return Err(ApiError::unprocessable(format!(
                    "limits.{field}: must be between {floor} and {max} (this server's limit)"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(principal_name("user", "alice.b-1_x").is_ok());
        assert!(principal_name("user", "").is_err());
        assert!(principal_name("user", "-x").is_err());
        assert!(principal_name("user", "a/b").is_err());
        assert!(principal_name("user", &"a".repeat(65)).is_err());
    }

    #[test]
    fn secret_names() {
        let ok: BTreeMap<_, _> = [("API_KEY".to_string(), "v".to_string())].into();
        assert!(secrets(&ok).is_ok());
        for bad in ["1X", "A-B", "", "A B", "../x"] {
            let m: BTreeMap<_, _> = [(bad.to_string(), "v".to_string())].into();
            assert!(secrets(&m).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert!(metadata(&Some(serde_json::json!([1]))).is_err());
        assert!(metadata(&Some(serde_json::json!({"a": 1}))).is_ok());
        assert_eq!(metadata(&None).unwrap(), serde_json::json!({}));
    }
}
