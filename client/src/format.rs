//! How the CLI turns pushes into readable lines and input lines into commands. Plain code.

use crate::connection::Push;

/// What a line typed by the user asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Send to the room.
    Say(&'a str),
    /// `/to <uid> <text>`: a private message.
    To { target: &'a str, text: &'a str },
    /// `/quit`.
    Quit,
    /// An empty line.
    Nothing,
    /// A command the CLI does not know, or a malformed one, with help text.
    Invalid(String),
}

pub fn parse_input(line: &str) -> Input<'_> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Input::Nothing;
    }
    if line.trim() == "/quit" {
        return Input::Quit;
    }
    if let Some(rest) = line.strip_prefix("/to ") {
        return match rest.trim_start().split_once(' ') {
            Some((target, text)) if !target.is_empty() && !text.trim().is_empty() => {
                Input::To { target, text }
            }
            _ => Input::Invalid("usage: /to <user> <message>".into()),
        };
    }
    if line.starts_with('/') {
        return Input::Invalid(format!(
            "unknown command `{}`; commands: /to <user> <message>, /quit",
            line.split_whitespace().next().unwrap_or(line)
        ));
    }
    Input::Say(line)
}

/// One readable line for a push, e.g. `[lobby #12] alice: hello`.
pub fn push_line(p: &Push, me: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap_or(serde_json::Value::Null);
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    let tag = if p.rid.is_empty() {
        String::new()
    } else {
        format!("[{} #{}] ", p.rid, p.seq)
    };
    match p.route.as_str() {
        "onChat" if s("target") != "*" => {
            let to = if s("target") == me {
                "you".into()
            } else {
                s("target")
            };
            format!("{tag}(private) {} -> {to}: {}", s("from"), s("msg"))
        }
        "onChat" => format!("{tag}{}: {}", s("from"), s("msg")),
        "onAdd" => format!("{tag}* {} joined", s("user")),
        "onLeave" => format!("{tag}* {} left", s("user")),
        "onDestroy" => format!("{tag}* room {} was closed", s("rid")),
        other => format!("{tag}{other}: {}", String::from_utf8_lossy(&p.body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn push(route: &str, rid: &str, seq: u64, body: &str) -> Push {
        Push {
            route: route.into(),
            rid: rid.into(),
            seq,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn lines() {
        let chat = push(
            "onChat",
            "lobby",
            12,
            r#"{"msg":"hello","from":"alice","target":"*"}"#,
        );
        assert_eq!(push_line(&chat, "bob"), "[lobby #12] alice: hello");
        let add = push("onAdd", "lobby", 13, r#"{"user":"bob"}"#);
        assert_eq!(push_line(&add, "x"), "[lobby #13] * bob joined");
        let left = push("onLeave", "lobby", 14, r#"{"user":"bob"}"#);
        assert_eq!(push_line(&left, "x"), "[lobby #14] * bob left");
        let private = push(
            "onChat",
            "",
            0,
            r#"{"msg":"psst","from":"alice","target":"bob"}"#,
        );
        assert_eq!(push_line(&private, "bob"), "(private) alice -> you: psst");
        let other = push("onScore", "", 0, "42");
        assert_eq!(push_line(&other, "x"), "onScore: 42");
    }

    #[test]
    fn inputs() {
        assert_eq!(parse_input("hello there\n"), Input::Say("hello there"));
        assert_eq!(
            parse_input("/to bob hi you"),
            Input::To {
                target: "bob",
                text: "hi you"
            }
        );
        assert!(matches!(parse_input("/to bob"), Input::Invalid(_)));
        assert!(matches!(parse_input("/nope"), Input::Invalid(m) if m.contains("/nope")));
        assert_eq!(parse_input("/quit"), Input::Quit);
        assert_eq!(parse_input("  "), Input::Nothing);
    }
}
