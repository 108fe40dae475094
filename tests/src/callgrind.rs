//! Running a child process under valgrind's callgrind and reading what it executed over a
//! measured window: `callgrind_control --zero` when the window opens, `--dump` when it closes,
//! then the dump's `summary:` line. Instruction counts do not move with the machine's load,
//! unlike CPU time. Used by `roomcast-dev bench --callgrind` (the edges) and
//! `roomcast-dev floor --callgrind` (the probe's server).

use anyhow::{anyhow, bail, Result};
use roomcast_client::callgrind::{control, wait_for_summary};
use std::path::{Path, PathBuf};

/// A directory holding a wrapper script that runs a binary under callgrind, and the counts it
/// writes (`<name>.<pid>.out`, then `.1`, `.2`… for each dump).
#[derive(Debug, Clone)]
pub struct Callgrind {
    dir: PathBuf,
    /// File name prefix of the counts, so that several wrapped binaries can share `dir`.
    name: String,
}

impl Callgrind {
    /// Writes `<name>-under-callgrind.sh` (which runs `bin` with its arguments under callgrind)
    /// into a fresh temporary directory. Fails clearly when valgrind is not installed.
    pub fn wrap(bin: &Path, name: &str) -> Result<Callgrind> {
        use std::os::unix::fs::PermissionsExt;
        let found = std::process::Command::new("valgrind")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            bail!("--callgrind needs valgrind (Debian package `valgrind`)");
        }
        let dir = std::env::temp_dir().join(format!("roomcast-callgrind-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let c = Callgrind {
            dir,
            name: name.to_string(),
        };
        let script = c.script();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec valgrind --tool=callgrind --compress-strings=no --callgrind-out-file='{}/{name}.%p.out' '{}' \"$@\"\n",
                c.dir.display(),
                bin.display()
            ),
        )?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        println!("{name} runs under callgrind; counts in {}", c.dir.display());
        Ok(c)
    }

    /// The executable to start instead of the wrapped binary (same arguments). It `exec`s
    /// valgrind, so the child's pid is the one callgrind_control addresses.
    pub fn script(&self) -> PathBuf {
        self.dir.join(format!("{}-under-callgrind.sh", self.name))
    }

    /// Where the counts are written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens a window: zeroes the counters of `pid`.
    pub fn zero(pid: u32) {
        control(&["--zero", &pid.to_string()]);
    }

    /// Closes a window: asks `pid` for a dump of what it executed since its counters were zeroed
    /// and reads its total from the dump file (waiting up to a minute for it).
    pub fn window_instructions(&self, pid: u32) -> Result<u64> {
        // Dumps are numbered from 1 in the order they are made: one per measured window.
        let prefix = format!("{}.{pid}.out.", self.name);
        let made = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .count();
        control(&["--dump=window", &pid.to_string()]);
        let file = self.dir.join(format!("{prefix}{}", made + 1));
        wait_for_summary(&file).map_err(|e| anyhow!("{} {pid}: {e}", self.name))
    }
}
