//! Text that PostgreSQL can store. A `text` or `jsonb` value in a UTF-8 database may hold
//! any Unicode scalar value except U+0000 (Rust strings never hold a lone surrogate), so
//! every client-given string is checked here at validation: one refused value must be a
//! 400 for its sender, never a failed group commit that other requests share.

/// Why a string cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not contain the NUL character (\\u0000)")]
    Nul,
}

/// Whether PostgreSQL can store `s` as `text`/`jsonb`.
pub fn storable(s: &str) -> Result<(), TextError> {
    if s.as_bytes().contains(&0) {
        return Err(TextError::Nul);
    }
    Ok(())
}

/// Checks every string inside a JSON value, keys included, for `jsonb`; on a refusal,
/// the path of the first bad string (`a.b[2]`, empty for the root).
pub fn storable_json(v: &serde_json::Value) -> Result<(), (String, TextError)> {
    use serde_json::Value;
    match v {
        Value::String(s) => storable(s).map_err(|e| (String::new(), e)),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, v)| {
            storable_json(v).map_err(|(path, e)| (join(&format!("[{i}]"), &path), e))
        }),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            storable(k).map_err(|e| (k.replace('\0', "\\u0000"), e))?;
            storable_json(v).map_err(|(path, e)| (join(k, &path), e))
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn join(head: &str, tail: &str) -> String {
    match tail.as_bytes().first() {
        None => head.to_owned(),
        Some(b'[') => format!("{head}{tail}"),
        Some(_) => format!("{head}.{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_refused_anywhere_and_other_text_passes() {
        assert_eq!(storable("gpt\0x"), Err(TextError::Nul));
        assert_eq!(storable("\0"), Err(TextError::Nul));
        for ok in ["", "gpt-4o", "é ü 中文 🚀", "\u{1}\u{7f}\u{feff}"] {
            assert_eq!(storable(ok), Ok(()), "{ok:?}");
        }
        let nested = serde_json::json!({"a": [1, {"b\u{0}": "x"}]});
        assert_eq!(
            storable_json(&nested),
            Err(("a[1].b\\u0000".into(), TextError::Nul))
        );
        let deep = serde_json::json!({"a": [1, {"b": "x\u{0}"}]});
        assert_eq!(storable_json(&deep), Err(("a[1].b".into(), TextError::Nul)));
        let root = serde_json::json!("\u{0}");
        assert_eq!(storable_json(&root), Err((String::new(), TextError::Nul)));
        assert_eq!(storable_json(&serde_json::json!({"a": ["b"]})), Ok(()));
    }
}
