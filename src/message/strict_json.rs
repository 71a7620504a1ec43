//! JSON request bodies read with every object's keys unique.
//!
//! serde_json's `Value` keeps the last of two equal keys without a word, so
//! `{"to": "a@example.com", "to": "b@example.com"}` would send to the second address while a
//! proxy or log that read the first saw another message. RFC 8259 leaves such a document's
//! meaning open; mailroom refuses it instead of guessing. serde_json has no option for this, so
//! this visitor builds the same `Value` and stops at the first key given twice (the map's own
//! entry says when a key was already there, so the check costs no extra look-up).

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Parses one JSON document, refusing an object that gives a key twice. The error names the key
/// and where it is, as serde_json's own errors do.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// [`from_slice`] for text.
pub fn from_str(text: &str) -> Result<Value, serde_json::Error> {
    from_slice(text.as_bytes())
}

#[derive(Clone, Copy)]
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity, so every parsed float is finite.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            match object.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(earlier) => {
                    return Err(de::Error::custom(format_args!(
                        "the key \"{}\" is given twice in one object",
                        earlier.key().escape_debug()
                    )));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_refused_by_name_at_any_depth() {
        for text in [
            r#"{"to": "a@example.com", "to": "b@example.com"}"#,
            r#"{"messages": [{"subject": "x"}, {"to": 1, "to": 2}]}"#,
            r#"{"headers": {"X-A": "1", "X-A": "2"}}"#,
        ] {
            let e = from_str(text).expect_err(text).to_string();
            assert!(e.contains("given twice"), "{text}: {e}");
        }
        let e = from_str(r#"{"a": 1, "to": 1, "to": 2}"#).unwrap_err();
        assert!(e.to_string().contains("\"to\""), "{e}");
    }

    #[test]
    fn documents_read_as_serde_json_reads_them() {
        let text =
            r#"{"b": [1, -2, 3.5, true, null, "é\n"], "a": {"x": {}}, "n": 18446744073709551615}"#;
        assert_eq!(
            from_str(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        // Keys equal only when compared without case are different keys.
        assert!(from_str(r#"{"To": 1, "to": 2}"#).is_ok());
        assert!(
            from_str(r#"{"a": 1} {"#).is_err(),
            "trailing text is refused"
        );
    }
}
