//! JSON values in automerge documents.
//!
//! Objects become maps, arrays become lists, numbers become `Int`, `Uint` or
//! `F64` as they are written. [`update`] writes only what differs between an
//! old and a new value, key by key inside objects, so that concurrent
//! updates of different fields merge; a changed array is replaced whole.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, Prop, ReadDoc, ScalarValue};
use serde_json::{Map, Number, Value};

/// An automerge error while writing a document this crate controls: only a
/// bug causes one.
pub type DocResult<T> = Result<T, automerge::AutomergeError>;

fn scalar(v: &Value) -> Option<ScalarValue> {
    Some(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// Writes `value` at `prop` of `obj`, creating fresh objects for objects
/// and arrays.
pub fn put(
    doc: &mut AutoCommit,
    obj: &ObjId,
    prop: impl Into<Prop>,
    value: &Value,
) -> DocResult<()> {
    let prop = prop.into();
    match value {
        Value::Object(map) => {
            let child = doc.put_object(obj, prop, ObjType::Map)?;
            for (k, v) in map {
                put(doc, &child, k.as_str(), v)?;
            }
        }
        Value::Array(items) => {
            let child = doc.put_object(obj, prop, ObjType::List)?;
            for (i, v) in items.iter().enumerate() {
                insert(doc, &child, i, v)?;
            }
        }
        other => {
            let s = scalar(other).unwrap_or(ScalarValue::Null);
            doc.put(obj, prop, s)?;
        }
    }
    Ok(())
}

fn insert(doc: &mut AutoCommit, list: &ObjId, index: usize, value: &Value) -> DocResult<()> {
    match value {
        Value::Object(map) => {
            let child = doc.insert_object(list, index, ObjType::Map)?;
            for (k, v) in map {
                put(doc, &child, k.as_str(), v)?;
            }
        }
        Value::Array(items) => {
            let child = doc.insert_object(list, index, ObjType::List)?;
            for (i, v) in items.iter().enumerate() {
                insert(doc, &child, i, v)?;
            }
        }
        other => {
            doc.insert(list, index, scalar(other).unwrap_or(ScalarValue::Null))?;
        }
    }
    Ok(())
}

/// Appends `value` to the list `list`.
pub fn push(doc: &mut AutoCommit, list: &ObjId, value: &Value) -> DocResult<()> {
    let len = doc.length(list);
    insert(doc, list, len, value)
}

/// Makes the map `obj` hold `new`, writing only the keys whose values
/// differ from what it holds (and deleting keys `new` lacks).
pub fn update_map(doc: &mut AutoCommit, obj: &ObjId, new: &Map<String, Value>) -> DocResult<()> {
    let current = match read(doc, obj) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for key in current.keys() {
        if !new.contains_key(key) {
            doc.delete(obj, key.as_str())?;
        }
    }
    for (key, value) in new {
        match (current.get(key), value) {
            (Some(old), new) if old == new => {}
            (Some(Value::Object(_)), Value::Object(new_map)) => {
                let child = match doc.get(obj, key.as_str())? {
                    Some((automerge::Value::Object(ObjType::Map), id)) => id,
                    _ => {
                        put(doc, obj, key.as_str(), value)?;
                        continue;
                    }
                };
                update_map(doc, &child, new_map)?;
            }
            _ => put(doc, obj, key.as_str(), value)?,
        }
    }
    Ok(())
}

/// The JSON value of the object `obj`.
pub fn read(doc: &AutoCommit, obj: &ObjId) -> Value {
    match doc.object_type(obj) {
        Ok(ObjType::Map) | Ok(ObjType::Table) => {
            let mut map = Map::new();
            for key in doc.keys(obj) {
                if let Ok(Some((v, id))) = doc.get(obj, key.as_str()) {
                    map.insert(key.clone(), value_of(doc, v, &id));
                }
            }
            Value::Object(map)
        }
        Ok(ObjType::List) => {
            let len = doc.length(obj);
            let items = (0..len)
                .filter_map(|i| doc.get(obj, i).ok().flatten())
                .map(|(v, id)| value_of(doc, v, &id))
                .collect();
            Value::Array(items)
        }
        Ok(ObjType::Text) => Value::String(doc.text(obj).unwrap_or_default()),
        Err(_) => Value::Null,
    }
}

fn value_of(doc: &AutoCommit, v: automerge::Value<'_>, id: &ObjId) -> Value {
    match v {
        automerge::Value::Object(_) => read(doc, id),
        automerge::Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Null => Value::Null,
            ScalarValue::Boolean(b) => Value::Bool(*b),
            ScalarValue::Str(s) => Value::String(s.to_string()),
            ScalarValue::Int(i) => Value::Number((*i).into()),
            ScalarValue::Uint(u) => Value::Number((*u).into()),
            ScalarValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            ScalarValue::Counter(c) => Value::Number(i64::from(c).into()),
            ScalarValue::Timestamp(t) => Value::Number((*t).into()),
            ScalarValue::Bytes(_) | ScalarValue::Unknown { .. } => Value::Null,
        },
    }
}

/// The string at root key `key`, or empty when absent or not a string.
pub fn root_text(doc: &AutoCommit, key: &str) -> String {
    get_root(doc, key).as_str().unwrap_or_default().to_owned()
}

/// The value at `key` of the root map, as JSON (null when absent).
pub fn get_root(doc: &AutoCommit, key: &str) -> Value {
    match doc.get(automerge::ROOT, key) {
        Ok(Some((v, id))) => value_of(doc, v, &id),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ROOT;
    use serde_json::json;

    #[test]
    fn round_trip_and_minimal_updates() {
        let mut doc = AutoCommit::new();
        let v =
            json!({"a": 1, "b": -2, "c": 0.5, "d": "x", "e": [1, {"f": true}], "g": {"h": null}});
        let spec = doc.put_object(ROOT, "spec", ObjType::Map).unwrap();
        update_map(&mut doc, &spec, v.as_object().unwrap()).unwrap();
        assert_eq!(read(&doc, &spec), v);
        doc.commit();
        let before = doc.get_heads();
        let v2 =
            json!({"a": 1, "b": -2, "c": 0.75, "d": "x", "e": [1, {"f": true}], "g": {"h": 3}});
        update_map(&mut doc, &spec, v2.as_object().unwrap()).unwrap();
        doc.commit();
        assert_eq!(read(&doc, &spec), v2);
        // Only the two changed scalars were written.
        let changes = doc.get_changes(&before);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].len(), 2, "ops in the change");
    }

    #[test]
    fn concurrent_updates_of_different_fields_merge() {
        let mut a = AutoCommit::new();
        let spec = a.put_object(ROOT, "spec", ObjType::Map).unwrap();
        update_map(&mut a, &spec, json!({"x": 1, "y": 1}).as_object().unwrap()).unwrap();
        a.commit();
        let mut b = a.fork();
        update_map(&mut a, &spec, json!({"x": 2, "y": 1}).as_object().unwrap()).unwrap();
        update_map(&mut b, &spec, json!({"x": 1, "y": 3}).as_object().unwrap()).unwrap();
        a.merge(&mut b).unwrap();
        assert_eq!(read(&a, &spec), json!({"x": 2, "y": 3}));
    }
}
