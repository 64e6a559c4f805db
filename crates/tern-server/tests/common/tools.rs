//! The outside programs some tests drive (rabbitmqadmin, chromium): where each is looked for,
//! how it was found, and its version, checked before use. A test that cannot use one fails
//! saying which binary it tried, how it found it, and what was wrong. `scripts/test.sh`
//! installs both (the README's test command).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A program a test runs, and how it was chosen.
pub struct Tool {
    pub path: PathBuf,
    /// "TERN_TEST_X", "the project's .tools", "PATH", ...: for failure messages.
    pub how: String,
}

impl Tool {
    /// The program named by the environment variable `var` if it is set; else `default`.
    pub fn from_env_or(var: &str, default: Tool) -> Tool {
        match std::env::var_os(var) {
            Some(path) => Tool {
                path: PathBuf::from(path),
                how: format!("named by {var}"),
            },
            None => default,
        }
    }

    /// `name` as found on PATH (the bare name when it is not there, so the failure names it).
    pub fn on_path(name: &str) -> Tool {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        });
        Tool {
            how: match &found {
                Some(_) => "found on PATH".into(),
                None => "looked for on PATH, not there".into(),
            },
            path: found.unwrap_or_else(|| PathBuf::from(name)),
        }
    }

    /// A path inside this repository's `.tools` directory, where `scripts/test.sh` installs.
    pub fn project_local(relative: &str) -> Tool {
        // crates/tern-server -> the workspace root.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.ancestors().nth(2).unwrap_or(manifest);
        Tool {
            path: root.join(".tools").join(relative),
            how: "the project's .tools directory (TERN_TEST_* unset)".into(),
        }
    }

    /// The first line `--version` prints, checked by `accept`; panics with everything a person
    /// needs to fix it otherwise (`install` says how).
    pub fn checked_version(
        &self,
        accept: impl Fn(&str) -> bool,
        want: &str,
        install: &str,
    ) -> String {
        let shown = self.path.display();
        let fail = |why: String| -> ! {
            panic!(
                "this test needs {want}: {shown} ({}) {why}; {install}",
                self.how
            )
        };
        let out = match Command::new(&self.path).arg("--version").output() {
            Ok(out) => out,
            Err(e) => fail(format!("cannot be run: {e}")),
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or("").trim().to_string();
        if !out.status.success() || !accept(&first) {
            fail(format!("says {first:?} to --version ({})", out.status));
        }
        first
    }
}
