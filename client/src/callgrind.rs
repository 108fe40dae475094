//! Counting the load generator's own instructions over the measured window, when it runs under
//! valgrind's callgrind (`roomcast bench --callgrind FILE`): instruction counts do not move with
//! the machine's load, unlike CPU time, so before/after comparisons of the SDK's receive path
//! hold on a busy machine.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bench::WindowHook;

/// What the window's dump said: its instruction total, or why there is none.
pub type Counted = Arc<Mutex<Option<Result<u64, String>>>>;

/// A window hook that zeroes this process's callgrind counters as the window opens and dumps
/// them as it closes, and where the dump's total lands. `out_file` is the process's
/// `--callgrind-out-file`: the first dump is written to `out_file.1`.
pub fn own_window(out_file: PathBuf) -> (WindowHook, Counted) {
    let counted: Counted = Arc::default();
    let result = counted.clone();
    let pid = std::process::id().to_string();
    let hook = WindowHook(Arc::new(move |opening| {
        if opening {
            control(&["--zero", &pid]);
        } else {
            control(&["--dump=window", &pid]);
            *result.lock().expect("callgrind lock") = Some(summary(&out_file));
        }
    }));
    (hook, counted)
}

/// Runs `callgrind_control` (errors are ignored: a missing dump is reported by [`wait_for_summary`]).
pub fn control(args: &[&str]) {
    let _ = std::process::Command::new("callgrind_control")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status();
}

/// The total of the first dump, waited for (valgrind writes it asynchronously, and slowly).
fn summary(out_file: &std::path::Path) -> Result<u64, String> {
    let mut name = out_file.as_os_str().to_owned();
    name.push(".1");
    wait_for_summary(&PathBuf::from(name)).map_err(|e| {
        format!("{e} (is this process running under callgrind with that --callgrind-out-file?)")
    })
}

/// The instruction total of the callgrind dump `file`, waiting up to a minute for valgrind to
/// write it.
pub fn wait_for_summary(file: &std::path::Path) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(n) = text.lines().find_map(|l| l.strip_prefix("summary: ")) {
            return n
                .trim()
                .parse()
                .map_err(|e| format!("callgrind summary: {e}"));
        }
        if Instant::now() > deadline {
            return Err(format!("no callgrind dump in {}", file.display()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
