//! Child processes that never outlive the process that started them.
//!
//! Every child of the harness and of the dev stack (redis-server, edges, backends) is spawned
//! through [`die_with_parent`]: Linux's `PR_SET_PDEATHSIG` makes the kernel send the child
//! SIGTERM when its parent goes away, however it goes away — `kill -9` of the dev stack or of a
//! test binary included, where no destructor or signal handler can run. SIGTERM (not SIGKILL) so
//! edges still drain and clean up their Redis state; they exit within `--drain-secs`.
//!
//! Caveat: the kernel ties this to the *thread* that spawned the child, not to the whole
//! process. The dev stack spawns from its main thread, and the tests spawn from the test's own
//! thread (or runtime workers), which live at least as long as the nodes they own.
//!
//! The graceful path (SIGTERM, SIGINT, SIGHUP to the dev stack) is handled by
//! [`crate::stack`], which terminates its children itself and waits for them.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Arranges for the child spawned by `cmd` to get SIGTERM when this thread's process dies.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: getpid has no preconditions and cannot fail.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
        // functions (getppid, prctl, _exit) on values captured by copy.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect: then nobody would ever
                // signal us, so give up now.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    cmd
}

/// Sends SIGTERM to `child` unless it has already been reaped (so a recycled pid is never hit).
pub fn send_term(child: &mut Child) {
    #[cfg(unix)]
    if let Ok(None) = child.try_wait() {
        // SAFETY: plain syscall on the pid of our own, not yet reaped, child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// SIGTERM to every child at once, then waits up to `grace` in total for all of them; those
/// still running after it are killed (SIGKILL) and reaped.
pub fn terminate_all(children: &mut [&mut Child], grace: Duration) {
    for c in children.iter_mut() {
        send_term(c);
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut running = 0;
        for c in children.iter_mut() {
            if let Ok(None) = c.try_wait() {
                running += 1;
            }
        }
        if running == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The lines `child` writes on its (piped) stdout, echoed with `tag` so a failing test shows
/// them, as a channel that a test can wait on with a bound (`recv_timeout`).
pub fn stdout_lines(child: &mut Child, tag: &'static str) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                println!("[{tag}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}
