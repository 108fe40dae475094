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

/// Parses one line typed by the user. Only a line that *starts* with `/` is a command, so
/// `a/b` is ordinary text; the message text of `/to` is kept verbatim after the target.
pub fn parse_input(line: &str) -> Input<'_> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Input::Nothing;
    }
    if line.trim() == "/quit" {
        return Input::Quit;
    }
    if let Some(rest) = line
        .strip_prefix("/to")
        .filter(|r| r.is_empty() || r.starts_with(' '))
    {
        return match rest.trim_start().split_once(' ') {
            Some((target, text)) if !target.is_empty() && !text.trim().is_empty() => Input::To {
                target,
                text: text.trim_start(),
            },
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
///
/// `me` is the CLI's own uid (a private message to it reads `-> you`). `room` tags pushes that
/// carry no room: private messages travel on the session stream with an empty `rid`, but the
/// CLI sits in one room, so `[lobby] (private) alice -> you: psst` is what the user expects.
/// Bodies that are not the expected JSON print `?` for missing fields rather than failing:
/// the line is for a human, and a malformed push must not stop the chat.
pub fn push_line(p: &Push, me: &str, room: Option<&str>) -> String {
    let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap_or(serde_json::Value::Null);
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64());
    let target = v.get("target").and_then(|x| x.as_str()).unwrap_or("*");
    let tag = match (p.rid.as_str(), room) {
        ("", None) => String::new(),
        ("", Some(room)) => format!("[{room}] "),
        (rid, _) => format!("[{rid} #{}] ", p.seq),
    };
    match p.route.as_str() {
        // As in `chat.send`, a missing target means the whole room.
        "onChat" if target != "*" => {
            let to = if target == me { "you" } else { target };
            format!("{tag}(private) {} -> {to}: {}", s("from"), s("msg"))
        }
        "onChat" => format!("{tag}{}: {}", s("from"), s("msg")),
        "onAdd" => format!("{tag}* {} joined", s("user")),
        "onLeave" => format!("{tag}* {} left", s("user")),
        "onDestroy" => format!("{tag}* room {} was closed", s("rid")),
        "onGap" => match (n("from"), n("to")) {
            (Some(from), Some(to)) => format!("{tag}* missed messages #{from}..#{to}"),
            _ => format!("{tag}* missed some messages"),
        },
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
        assert_eq!(push_line(&chat, "bob", None), "[lobby #12] alice: hello");
        // A room push keeps its own room and seq whatever room the CLI is in.
        assert_eq!(
            push_line(&chat, "bob", Some("other")),
            "[lobby #12] alice: hello"
        );
        let add = push("onAdd", "lobby", 13, r#"{"user":"bob"}"#);
        assert_eq!(push_line(&add, "x", None), "[lobby #13] * bob joined");
        let left = push("onLeave", "lobby", 14, r#"{"user":"bob"}"#);
        assert_eq!(push_line(&left, "x", None), "[lobby #14] * bob left");
        let gap = push("onGap", "lobby", 49, r#"{"rid":"lobby","from":42,"to":49}"#);
        assert_eq!(
            push_line(&gap, "x", None),
            "[lobby #49] * missed messages #42..#49"
        );
        let destroy = push("onDestroy", "lobby", 50, r#"{"rid":"lobby"}"#);
        assert_eq!(
            push_line(&destroy, "x", None),
            "[lobby #50] * room lobby was closed"
        );
        let private = push(
            "onChat",
            "",
            0,
            r#"{"msg":"psst","from":"alice","target":"bob"}"#,
        );
        assert_eq!(
            push_line(&private, "bob", None),
            "(private) alice -> you: psst"
        );
        assert_eq!(
            push_line(&private, "bob", Some("lobby")),
            "[lobby] (private) alice -> you: psst"
        );
        assert_eq!(
            push_line(&private, "carol", Some("lobby")),
            "[lobby] (private) alice -> bob: psst"
        );
        let other = push("onScore", "", 0, "42");
        assert_eq!(push_line(&other, "x", None), "onScore: 42");
    }

    #[test]
    fn malformed_push_bodies_still_print() {
        let garbage = push("onChat", "lobby", 3, "\u{0}not json");
        assert_eq!(push_line(&garbage, "x", None), "[lobby #3] ?: ?");
        let wrong_types = push("onAdd", "lobby", 4, r#"{"user":7}"#);
        assert_eq!(push_line(&wrong_types, "x", None), "[lobby #4] * ? joined");
        let bad_gap = push("onGap", "lobby", 5, r#"{"from":"x"}"#);
        assert_eq!(
            push_line(&bad_gap, "x", None),
            "[lobby #5] * missed some messages"
        );
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

    #[test]
    fn input_edge_cases() {
        // Windows line endings and surrounding spaces.
        assert_eq!(parse_input("/quit\r\n"), Input::Quit);
        assert_eq!(parse_input("  /quit "), Input::Quit);
        // Extra spaces between `/to` and the target are tolerated; the text is kept verbatim.
        assert_eq!(
            parse_input("/to   bob  two  spaces"),
            Input::To {
                target: "bob",
                text: "two  spaces"
            }
        );
        assert!(matches!(parse_input("/to "), Input::Invalid(_)));
        assert!(matches!(parse_input("/to bob   "), Input::Invalid(_)));
        // `/top` is not `/to`, and a lone `/to` is a command without arguments.
        assert!(matches!(parse_input("/top secret"), Input::Invalid(m) if m.contains("/top")));
        assert!(matches!(parse_input("/to"), Input::Invalid(m) if m.starts_with("usage")));
        // Text that merely contains a slash is said to the room.
        assert_eq!(parse_input("a/b"), Input::Say("a/b"));
    }
}
