//! The route dictionary and the handshake answer (`sys.heartbeat`, `sys.dict`, `sys.protos`).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use md5::{Digest, Md5};
use serde_json::{json, Map, Value};

use super::protobuf::Protos;

/// Route ↔ code, numbered from 1 as Pomelo does: the handler routes sorted, then the push
/// routes (the demo's `config/dictionary.json`).
pub struct Dict {
    codes: HashMap<String, u16>,
    routes: Vec<String>,
    version: String,
}

/// The chat demo's handler routes, in Pomelo's order (sorted).
pub const DEMO_HANDLER_ROUTES: [&str; 3] = [
    "chat.chatHandler.send",
    "connector.entryHandler.enter",
    "gate.gateHandler.queryEntry",
];

/// The demo's `config/dictionary.json` (push routes).
pub const DEMO_PUSH_ROUTES: [&str; 3] = ["onChat", "onAdd", "onLeave"];

impl Dict {
    pub fn new(routes: Vec<String>) -> Dict {
        let codes = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), (i + 1) as u16))
            .collect();
        // Pomelo: base64(md5(JSON.stringify(dict))) with the dict in insertion order.
        let json = format!(
            "{{{}}}",
            routes
                .iter()
                .enumerate()
                .map(|(i, r)| format!("{}:{}", Value::String(r.clone()), i + 1))
                .collect::<Vec<_>>()
                .join(",")
        );
        let version = base64::engine::general_purpose::STANDARD.encode(Md5::digest(json));
        Dict {
            codes,
            routes,
            version,
        }
    }

    pub fn chat_demo() -> Dict {
        Dict::new(
            DEMO_HANDLER_ROUTES
                .iter()
                .chain(DEMO_PUSH_ROUTES.iter())
                .map(|s| s.to_string())
                .collect(),
        )
    }

    pub fn code(&self, route: &str) -> Option<u16> {
        self.codes.get(route).copied()
    }

    pub fn route(&self, code: u16) -> Option<&str> {
        self.routes
            .get(usize::from(code).checked_sub(1)?)
            .map(String::as_str)
    }

    fn value(&self) -> (Value, Value) {
        let mut to_code = Map::new();
        let mut to_route = Map::new();
        for (i, r) in self.routes.iter().enumerate() {
            to_code.insert(r.clone(), json!(i + 1));
            to_route.insert((i + 1).to_string(), json!(r));
        }
        (Value::Object(to_code), Value::Object(to_route))
    }
}

/// What the client's handshake asked for.
#[derive(Debug)]
pub struct Request {
    pub proto_version: Option<String>,
    pub dict_version: Option<String>,
    /// `user` of the handshake (kept for the log; authentication is in the enter body).
    pub user: Value,
}

/// Reads the client's handshake body. Unparsable JSON counts as `{}` (as Pomelo); without
/// `sys` it is refused (Pomelo answers `{"code":500}`).
pub fn parse_request(body: &[u8]) -> Result<Request, String> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let sys = v
        .get("sys")
        .filter(|s| s.is_object())
        .ok_or("handshake without a `sys` object")?;
    let text = |k: &str| {
        sys.get(k).and_then(|x| match x {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    Ok(Request {
        proto_version: text("protoVersion"),
        dict_version: text("dictVersion"),
        user: v.get("user").cloned().unwrap_or(Value::Null),
    })
}

/// The success answer: dictionary and schemas unless the client already has these versions.
pub fn answer(req: &Request, dict: &Dict, protos: &Protos, heartbeat: Duration) -> Vec<u8> {
    let mut sys = Map::new();
    sys.insert("heartbeat".into(), json!(heartbeat.as_secs()));
    if req.dict_version.as_deref() != Some(dict.version.as_str()) {
        let (to_code, to_route) = dict.value();
        sys.insert("dict".into(), to_code.clone());
        sys.insert("routeToCode".into(), to_code);
        sys.insert("codeToRoute".into(), to_route);
        sys.insert("dictVersion".into(), json!(dict.version));
    }
    sys.insert("useDict".into(), json!(true));
    let p = protos.handshake_value();
    if req.proto_version.as_deref() != p["version"].as_str() {
        sys.insert("protos".into(), p);
    }
    sys.insert("useProto".into(), json!(true));
    serde_json::to_vec(&json!({ "code": 200, "sys": sys })).unwrap_or_default()
}

/// The refusal of a handshake (sent as a HANDSHAKE package, then the connection closes).
pub fn refusal() -> &'static [u8] {
    br#"{"code":500}"#
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_codes_match_the_capture() {
        let d = Dict::chat_demo();
        assert_eq!(d.code("chat.chatHandler.send"), Some(1));
        assert_eq!(d.code("connector.entryHandler.enter"), Some(2));
        assert_eq!(d.code("gate.gateHandler.queryEntry"), Some(3));
        assert_eq!(d.code("onChat"), Some(4));
        assert_eq!(d.route(2), Some("connector.entryHandler.enter"));
        assert_eq!(d.route(0), None);
        assert_eq!(d.route(99), None);
    }

    #[test]
    fn answer_carries_dict_protos_and_heartbeat() {
        let d = Dict::chat_demo();
        let p = Protos::parse(super::super::protobuf::CHAT_DEMO_SERVER_PROTOS).unwrap();
        let req = parse_request(
            br#"{"sys":{"type":"js-websocket","version":"0.0.1","rsa":{},"protoVersion":0},"user":{}}"#,
        )
        .unwrap();
        let a: Value =
            serde_json::from_slice(&answer(&req, &d, &p, Duration::from_secs(3))).unwrap();
        assert_eq!(a["code"], 200);
        assert_eq!(a["sys"]["heartbeat"], 3);
        assert_eq!(a["sys"]["dict"]["gate.gateHandler.queryEntry"], 3);
        assert_eq!(a["sys"]["codeToRoute"]["1"], "chat.chatHandler.send");
        assert_eq!(a["sys"]["protos"]["server"]["onChat"]["from"]["tag"], 2);
        // A client holding the current versions gets neither again.
        let again = Request {
            proto_version: a["sys"]["protos"]["version"].as_str().map(String::from),
            dict_version: a["sys"]["dictVersion"].as_str().map(String::from),
            user: Value::Null,
        };
        let b: Value =
            serde_json::from_slice(&answer(&again, &d, &p, Duration::from_secs(3))).unwrap();
        assert!(b["sys"].get("dict").is_none() && b["sys"].get("protos").is_none());
        assert!(parse_request(b"{}").is_err());
        assert!(parse_request(b"not json").is_err());
    }
}
