//! Picking one key out of a JSON value: the `jsonKey=` query parameter of the secret route
//! ([`crate::http::server`]) and the JSON key of a `{{resolve:secretsmanager:...}}` reference
//! ([`crate::features::reference::resolve`]) read it the same way, here.
//!
//! The value is a secret, so everything parsed out of it is wiped before it is dropped:
//! every string of the document, map keys included, and the picked part is built in a
//! buffer sized for it up front and wiped when dropped.

use zeroize::{Zeroize, Zeroizing};

/// Why no key could be picked. Names the key, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonKeyError {
    /// The value is not a JSON object or array.
    #[error("the value is not a JSON object or array, so the key {0:?} cannot be read from it")]
    NotJson(String),
    /// The document has no such key.
    #[error("the value has no JSON key {0:?}")]
    NoSuchKey(String),
}

/// Room the picked part may need beyond the value's own length: a number written back by
/// serde_json can be longer than it was written (`1e2` becomes `100.0`).
const REWRITE_ALLOWANCE: usize = 64;

/// Picks `key` out of a JSON value: a top-level key as written (CloudFormation's meaning),
/// else a JSON pointer (`/a/b`) or a dotted path (`a.b`, digits index arrays). A string is
/// returned as is, anything else as JSON.
pub fn json_key(value: &str, key: &str) -> Result<Zeroizing<String>, JsonKeyError> {
    let mut document: serde_json::Value =
        serde_json::from_str(value).map_err(|_| JsonKeyError::NotJson(key.to_owned()))?;
    let picked = pick(&document, key, value.len());
    wipe(&mut document);
    picked
}

fn pick(
    document: &serde_json::Value,
    key: &str,
    value_len: usize,
) -> Result<Zeroizing<String>, JsonKeyError> {
    let found = match document {
        serde_json::Value::Object(map) if map.contains_key(key) => map.get(key),
        _ if key.starts_with('/') => document.pointer(key),
        _ => {
            let pointer: String = key
                .split('.')
                .map(|part| format!("/{}", part.replace('~', "~0").replace('/', "~1")))
                .collect();
            document.pointer(&pointer)
        }
    };
    match found {
        Some(serde_json::Value::String(s)) => Ok(Zeroizing::new(s.clone())),
        Some(other) => {
            let mut out = Zeroizing::new(Vec::with_capacity(value_len + REWRITE_ALLOWANCE));
            serde_json::to_writer(&mut *out, other)
                .map_err(|_| JsonKeyError::NotJson(key.to_owned()))?;
            let text = String::from_utf8(std::mem::take(&mut *out))
                .map_err(|_| JsonKeyError::NotJson(key.to_owned()))?;
            Ok(Zeroizing::new(text))
        }
        None if document.is_object() || document.is_array() => {
            Err(JsonKeyError::NoSuchKey(key.to_owned()))
        }
        None => Err(JsonKeyError::NotJson(key.to_owned())),
    }
}

/// Wipes every string of a parsed document, the keys of its objects included (taken out of
/// each map so they can be written over).
fn wipe(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe),
        serde_json::Value::Object(map) => {
            for (mut key, mut item) in std::mem::take(map) {
                key.zeroize();
                wipe(&mut item);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_keys_first_then_pointers_and_dotted_paths() {
        let secret =
            r#"{"a.b":"literal","a":{"b":"nested","list":[1,"two"]},"n":null,"o":{"x":1e2}}"#;
        assert_eq!(json_key(secret, "a.b").unwrap().as_str(), "literal");
        assert_eq!(json_key(secret, "a.list.1").unwrap().as_str(), "two");
        assert_eq!(json_key(secret, "/a/b").unwrap().as_str(), "nested");
        assert_eq!(json_key(secret, "o").unwrap().as_str(), r#"{"x":100.0}"#);
        assert_eq!(json_key(secret, "n").unwrap().as_str(), "null");
        assert_eq!(
            json_key(secret, "zz").unwrap_err(),
            JsonKeyError::NoSuchKey("zz".into())
        );
        assert_eq!(
            json_key("42", "k").unwrap_err(),
            JsonKeyError::NotJson("k".into())
        );
        assert_eq!(
            json_key("{bad", "k").unwrap_err(),
            JsonKeyError::NotJson("k".into())
        );
    }

    #[test]
    fn every_string_of_the_document_is_wiped() {
        let mut document: serde_json::Value = serde_json::from_str(
            r#"{"user":"admin","pw":"hunter2","nested":{"list":["a","b"],"token":"t0k"}}"#,
        )
        .unwrap();
        // What `wipe` leaves behind is a document whose strings are all empty, and whose
        // objects are empty (their keys taken out and wiped).
        let serde_json::Value::Object(map) = &mut document else {
            panic!("an object");
        };
        let mut list = map["nested"]["list"].take();
        wipe(&mut list);
        assert_eq!(list, serde_json::json!(["", ""]));
        wipe(&mut document);
        assert_eq!(document, serde_json::json!({}));
    }
}
