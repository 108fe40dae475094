//! pomelo-protobuf bodies for pushes whose route has a schema (`serverProtos.json`): the
//! schema's source form (`{"onChat": {"required string msg": 1, …}}`) is parsed once at start-up
//! into the form Pomelo's handshake sends (`{field: {option, type, tag}, __messages, __tags}`)
//! and into encoders. Wire rules (pomelo-protocol.md §8): tags `(tag << 3) | wire type`;
//! `uInt32` varint, `sInt32` *and* `int32` zig-zag varints, `float`/`double` little endian,
//! strings and nested messages length-delimited; repeated numbers are one tag, a varint count,
//! then the elements (not Google's packed encoding); repeated strings/messages repeat the tag.
//! Client-to-server protobuf (`clientProtos`) is not supported: requests are JSON.

use std::collections::HashMap;

use base64::Engine;
use bytes::{BufMut, BytesMut};
use md5::{Digest, Md5};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Option_ {
    Required,
    Optional,
    Repeated,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    option: Option_,
    /// `uInt32`, `sInt32`, `int32`, `float`, `double`, `string` or a message name.
    ty: String,
    tag: u32,
}

#[derive(Debug, Clone, Default)]
struct Message {
    /// Ordered by tag.
    fields: Vec<Field>,
    /// `message X` blocks declared inside this one.
    nested: HashMap<String, Message>,
}

/// The server's schemas: one message per push route.
#[derive(Debug, Clone, Default)]
pub struct Protos {
    routes: HashMap<String, Message>,
    /// The parsed form sent in the handshake (`sys.protos.server`).
    parsed: Value,
    /// `sys.protos.version`: changes whenever the schemas do (clients cache by it).
    version: String,
}

/// The schemas the edge ships: the chat demo's `serverProtos.json`.
pub const CHAT_DEMO_SERVER_PROTOS: &str = r#"{
  "onChat": {
    "required string msg": 1,
    "required string from": 2,
    "required string target": 3
  }
}"#;

impl Protos {
    /// Parses schemas in pomelo-protobuf's source form.
    pub fn parse(source: &str) -> Result<Protos, String> {
        let v: Value =
            serde_json::from_str(source).map_err(|e| format!("protos are not JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or("protos must be a JSON object of route → schema")?;
        let mut routes = HashMap::new();
        let mut parsed = Map::new();
        for (route, schema) in obj {
            let (m, p) = parse_message(route, schema)?;
            routes.insert(route.clone(), m);
            parsed.insert(route.clone(), p);
        }
        let parsed = Value::Object(parsed);
        let json = serde_json::to_string(&serde_json::json!({ "client": {}, "server": parsed }))
            .map_err(|e| e.to_string())?;
        let version = base64::engine::general_purpose::STANDARD.encode(Md5::digest(json));
        Ok(Protos {
            routes,
            parsed,
            version,
        })
    }

    /// `sys.protos` of the handshake answer.
    pub fn handshake_value(&self) -> Value {
        serde_json::json!({ "server": self.parsed, "client": {}, "version": self.version })
    }

    pub fn has(&self, route: &str) -> bool {
        self.routes.contains_key(route)
    }

    /// Encodes a JSON body for `route`; `None` if the route has no schema. An error when the
    /// body does not fit the schema (a required field missing, a wrong type).
    pub fn encode(&self, route: &str, body: &Value) -> Option<Result<Vec<u8>, String>> {
        let m = self.routes.get(route)?;
        let mut out = BytesMut::new();
        Some(
            encode_message(m, &self.routes, body, &mut out)
                .map(|()| out.to_vec())
                .map_err(|e| format!("`{route}` body does not fit its schema: {e}")),
        )
    }
}

fn parse_message(name: &str, schema: &Value) -> Result<(Message, Value), String> {
    let obj = schema
        .as_object()
        .ok_or_else(|| format!("schema of `{name}` is not an object"))?;
    let mut m = Message::default();
    let mut parsed = Map::new();
    let mut messages = Map::new();
    let mut tags = Map::new();
    for (key, value) in obj {
        let words: Vec<&str> = key.split(' ').collect();
        match words.as_slice() {
            ["message", inner] => {
                let (nm, np) = parse_message(inner, value)?;
                m.nested.insert(inner.to_string(), nm);
                messages.insert(inner.to_string(), np);
            }
            [option @ ("required" | "optional" | "repeated"), ty, field] => {
                let tag = value
                    .as_u64()
                    .filter(|t| (1..1 << 29).contains(t))
                    .ok_or_else(|| format!("`{name}.{field}`: tag must be 1..2^29"))?
                    as u32;
                if tags.contains_key(&tag.to_string()) {
                    return Err(format!("`{name}`: tag {tag} used twice"));
                }
                let option = match *option {
                    "required" => Option_::Required,
                    "optional" => Option_::Optional,
                    _ => Option_::Repeated,
                };
                m.fields.push(Field {
                    name: field.to_string(),
                    option,
                    ty: ty.to_string(),
                    tag,
                });
                parsed.insert(
                    field.to_string(),
                    serde_json::json!({ "option": words[0], "type": ty, "tag": tag }),
                );
                tags.insert(tag.to_string(), Value::String(field.to_string()));
            }
            _ => return Err(format!("`{name}`: cannot parse schema key `{key}`")),
        }
    }
    m.fields.sort_by_key(|f| f.tag);
    parsed.insert("__messages".into(), Value::Object(messages));
    parsed.insert("__tags".into(), Value::Object(tags));
    Ok((m, Value::Object(parsed)))
}

fn wire_type(ty: &str) -> u32 {
    match ty {
        "uInt32" | "sInt32" | "int32" => 0,
        "double" => 1,
        "float" => 5,
        _ => 2,
    }
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.put_u8(b);
            return;
        }
        out.put_u8(b | 0x80);
    }
}

fn encode_message(
    m: &Message,
    top: &HashMap<String, Message>,
    body: &Value,
    out: &mut BytesMut,
) -> Result<(), String> {
    let obj = body.as_object().ok_or("not an object")?;
    for f in &m.fields {
        let value = match obj.get(&f.name) {
            None | Some(Value::Null) if f.option == Option_::Required => {
                return Err(format!("required field `{}` missing", f.name))
            }
            None | Some(Value::Null) => continue,
            Some(v) => v,
        };
        let key = u64::from(f.tag << 3 | wire_type(&f.ty));
        if f.option == Option_::Repeated {
            let items = value
                .as_array()
                .ok_or_else(|| format!("`{}` must be an array", f.name))?;
            if items.is_empty() {
                continue;
            }
            if wire_type(&f.ty) != 2 {
                put_varint(out, key);
                put_varint(out, items.len() as u64);
                for item in items {
                    encode_value(&f.name, &f.ty, m, top, item, out)?;
                }
            } else {
                for item in items {
                    put_varint(out, key);
                    encode_value(&f.name, &f.ty, m, top, item, out)?;
                }
            }
        } else {
            put_varint(out, key);
            encode_value(&f.name, &f.ty, m, top, value, out)?;
        }
    }
    Ok(())
}

fn encode_value(
    name: &str,
    ty: &str,
    parent: &Message,
    top: &HashMap<String, Message>,
    v: &Value,
    out: &mut BytesMut,
) -> Result<(), String> {
    let bad = || format!("`{name}` is not a valid {ty}");
    match ty {
        "uInt32" => put_varint(out, v.as_u64().ok_or_else(bad)?),
        "sInt32" | "int32" => {
            let n = v.as_i64().ok_or_else(bad)?;
            put_varint(
                out,
                if n < 0 {
                    n.unsigned_abs() * 2 - 1
                } else {
                    n as u64 * 2
                },
            );
        }
        "float" => out.put_f32_le(v.as_f64().ok_or_else(bad)? as f32),
        "double" => out.put_f64_le(v.as_f64().ok_or_else(bad)?),
        "string" => {
            let s = v.as_str().ok_or_else(bad)?;
            put_varint(out, s.len() as u64);
            out.put_slice(s.as_bytes());
        }
        other => {
            let inner = parent
                .nested
                .get(other)
                .or_else(|| top.get(&format!("message {other}")))
                .ok_or_else(|| format!("`{name}`: unknown type `{other}`"))?;
            let mut tmp = BytesMut::new();
            encode_message(inner, top, v, &mut tmp)?;
            put_varint(out, tmp.len() as u64);
            out.put_slice(&tmp);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_chat_encodes_as_captured_from_pomelo() {
        let p = Protos::parse(CHAT_DEMO_SERVER_PROTOS).unwrap();
        let body = serde_json::json!({"msg": "hello all", "from": "alice", "target": "*"});
        let bytes = p.encode("onChat", &body).unwrap().unwrap();
        let mut want = vec![0x0a, 9];
        want.extend_from_slice(b"hello all");
        want.extend_from_slice(&[0x12, 5]);
        want.extend_from_slice(b"alice");
        want.extend_from_slice(&[0x1a, 1, b'*']);
        assert_eq!(bytes, want);
        assert!(p.encode("onAdd", &body).is_none());
        let missing = serde_json::json!({"msg": "x"});
        assert!(p.encode("onChat", &missing).unwrap().is_err());
    }

    #[test]
    fn handshake_form_matches_pomelo_parser() {
        let p = Protos::parse(CHAT_DEMO_SERVER_PROTOS).unwrap();
        let v = p.handshake_value();
        assert_eq!(
            v["server"]["onChat"]["msg"],
            serde_json::json!({"option": "required", "type": "string", "tag": 1})
        );
        assert_eq!(v["server"]["onChat"]["__tags"]["3"], "target");
        assert!(v["version"].as_str().unwrap().len() > 10);
    }

    #[test]
    fn numbers_nested_and_repeated() {
        let src = r#"{"onX": {"required int32 a": 1, "repeated uInt32 b": 2,
            "message P": {"required float x": 1}, "repeated P ps": 3, "optional double d": 4}}"#;
        let p = Protos::parse(src).unwrap();
        let body = serde_json::json!({"a": -2, "b": [1, 300], "ps": [{"x": 1.0}]});
        let bytes = p.encode("onX", &body).unwrap().unwrap();
        let mut want = vec![0x08, 3, 0x10, 2, 1, 0xAC, 0x02, 0x1a, 5, 0x0d];
        want.extend_from_slice(&1.0f32.to_le_bytes());
        assert_eq!(bytes, want);
        assert!(Protos::parse(r#"{"r": {"bad key": 1}}"#).is_err());
    }
}
