//! A room script's call, written straight into one command buffer.
//!
//! Every join, leave and room push is one `EVALSHA` with eight keys and a dozen arguments.
//! redis-rs's `ScriptInvocation` keeps each key and argument in a vector of its own and copies
//! them all into a command when it is sent; this writes them once, in place, which is a
//! measurable share of a request on the edge (BENCHMARKS.md, session 5). Same protocol: the
//! script is loaded and the call repeated when Redis answers `NOSCRIPT`.

use redis::aio::ConnectionManager;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, Script, ServerErrorKind, ToRedisArgs};

/// `EVALSHA <hash> <numkeys> <keys…> <args…>` under construction: keys are all given up front
/// (their count comes before them), arguments are appended in `ARGV` order.
pub(super) struct ScriptCall<'a> {
    script: &'a Script,
    cmd: Cmd,
}

impl<'a> ScriptCall<'a> {
    pub(super) fn new(script: &'a Script, keys: &[&str]) -> ScriptCall<'a> {
        // Command, hash, key count, the keys, and about a dozen arguments.
        let bytes = 80 + keys.iter().map(|k| k.len()).sum::<usize>() + 256;
        let mut cmd = Cmd::with_capacity(3 + keys.len() + 16, bytes);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        ScriptCall { script, cmd }
    }

    pub(super) fn arg(mut self, arg: impl ToRedisArgs) -> ScriptCall<'a> {
        self.cmd.arg(arg);
        self
    }

    pub(super) async fn invoke<T: FromRedisValue>(
        self,
        conn: &mut ConnectionManager,
    ) -> RedisResult<T> {
        match self.cmd.query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.script.prepare_invoke().load_async(conn).await?;
                self.cmd.query_async(conn).await
            }
            result => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_before_arguments_with_their_count() {
        let script = Script::new("return 1");
        let call = ScriptCall::new(&script, &["k1", "k2"]).arg("a").arg(7u64);
        let args: Vec<Vec<u8>> = call
            .cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => b"<not simple>".to_vec(),
            })
            .collect();
        let expected: Vec<&[u8]> = vec![
            b"EVALSHA",
            script.get_hash().as_bytes(),
            b"2",
            b"k1",
            b"k2",
            b"a",
            b"7",
        ];
        assert_eq!(args, expected);
    }
}
