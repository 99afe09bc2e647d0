//! [`FakeShell`]: a [`NodeShell`] that records every command, script and upload, keeps the files
//! it was given, and answers commands as it is told (an exit status and output, or a broken
//! session), so that install and replace are unit-tested step by step.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::ssh::{CommandOutput, FileUpload, NodeShell, SshError};

/// One thing done on the fake node, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellEvent {
    /// A command (`exec`, and `run`/`sudo` through it).
    Command(String),
    /// A root script sent on standard input (`sudo_script`).
    Script(String),
    /// A file installed (`upload` or `upload_files`); `changed` is false when it was there already.
    Upload { path: String, mode: u32, changed: bool },
}

/// How the fake answers a command or script containing a given text.
#[derive(Debug, Clone)]
enum Answer {
    Output(CommandOutput),
    Broken(String),
}

#[derive(Debug, Default)]
struct State {
    events: Vec<ShellEvent>,
    /// Rules, the latest first to match.
    answers: Vec<(String, Answer)>,
    /// Paths whose upload fails (a text the path contains).
    failing_uploads: Vec<String>,
    /// The node's files: contents and mode.
    files: BTreeMap<String, (Vec<u8>, u32)>,
}

/// A recording, scriptable shell on a pretend node.
#[derive(Debug)]
pub struct FakeShell {
    node: String,
    state: Mutex<State>,
}

impl FakeShell {
    /// A node on which every command succeeds with no output until told otherwise.
    pub fn new(node: &str) -> Self {
        FakeShell { node: node.into(), state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; its state is still readable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Commands and scripts containing `text` exit with `status` and print `stdout` (the latest
    /// rule that matches wins).
    pub fn answer(&self, text: &str, status: i32, stdout: &str) -> &Self {
        let output = CommandOutput { status, stdout: stdout.into(), stderr: if status == 0 { String::new() } else { format!("{text}: failed") } };
        self.state().answers.push((text.into(), Answer::Output(output)));
        self
    }

    /// Commands and scripts containing `text` break the session (an SSH error, not an exit status).
    pub fn break_on(&self, text: &str, message: &str) -> &Self {
        self.state().answers.push((text.into(), Answer::Broken(message.into())));
        self
    }

    /// Uploads of a path containing `text` fail.
    pub fn fail_upload(&self, text: &str) -> &Self {
        self.state().failing_uploads.push(text.into());
        self
    }

    /// Puts a file on the node, as if installed before.
    pub fn with_file(&self, path: &str, contents: &[u8], mode: u32) -> &Self {
        self.state().files.insert(path.into(), (contents.to_vec(), mode));
        self
    }

    /// Everything done so far, in order.
    pub fn events(&self) -> Vec<ShellEvent> {
        self.state().events.clone()
    }

    /// The commands and scripts run so far, in order.
    pub fn commands(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                ShellEvent::Command(c) | ShellEvent::Script(c) => Some(c),
                ShellEvent::Upload { .. } => None,
            })
            .collect()
    }

    /// The files that changed, in order: path and mode.
    pub fn uploads(&self) -> Vec<(String, u32)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                ShellEvent::Upload { path, mode, changed: true } => Some((path, mode)),
                _ => None,
            })
            .collect()
    }

    /// A file on the node: contents and mode.
    pub fn file(&self, path: &str) -> Option<(Vec<u8>, u32)> {
        self.state().files.get(path).cloned()
    }

    fn respond(&self, event: ShellEvent, text: &str) -> Result<CommandOutput, SshError> {
        let mut state = self.state();
        state.events.push(event);
        match state.answers.iter().rev().find(|(t, _)| text.contains(t.as_str())).map(|(_, a)| a.clone()) {
            Some(Answer::Output(out)) => Ok(out),
            Some(Answer::Broken(message)) => Err(SshError::Session { node: self.node.clone(), action: format!("running `{text}`"), message }),
            None => Ok(CommandOutput { status: 0, stdout: String::new(), stderr: String::new() }),
        }
    }

    fn put(&self, contents: &[u8], path: &str, mode: u32) -> Result<bool, SshError> {
        let mut state = self.state();
        if state.failing_uploads.iter().any(|t| path.contains(t.as_str())) {
            return Err(SshError::Command { node: self.node.clone(), command: format!("installing {path}"), status: 1, stderr: "no space left on device".into() });
        }
        let changed = state.files.get(path).is_none_or(|(c, _)| c != contents);
        state.files.insert(path.into(), (contents.to_vec(), mode));
        state.events.push(ShellEvent::Upload { path: path.into(), mode, changed });
        Ok(changed)
    }
}

impl NodeShell for FakeShell {
    fn node(&self) -> &str {
        &self.node
    }

    fn exec(&self, command: &str) -> Result<CommandOutput, SshError> {
        self.respond(ShellEvent::Command(command.into()), command)
    }

    fn sudo_script(&self, script: &str) -> Result<CommandOutput, SshError> {
        self.respond(ShellEvent::Script(script.into()), script)
    }

    fn upload(&self, contents: &[u8], path: &str, mode: u32) -> Result<bool, SshError> {
        self.put(contents, path, mode)
    }

    fn upload_files(&self, files: &[FileUpload<'_>]) -> Result<Vec<bool>, SshError> {
        files.iter().map(|f| self.put(f.contents, f.path, f.mode)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_records_in_order_and_answers_by_the_latest_matching_rule() {
        let shell = FakeShell::new("m-0");
        shell.answer("cat", 0, "old").answer("cat /etc", 1, "");
        assert_eq!(shell.exec("cat /tmp/x").unwrap().stdout, "old");
        assert_eq!(shell.exec("cat /etc/x").unwrap().status, 1);
        assert!(shell.sudo("cat /etc/y").is_err(), "sudo fails on a non-zero exit");
        assert!(shell.upload(b"a", "/f", 0o600).unwrap());
        assert!(!shell.upload(b"a", "/f", 0o600).unwrap(), "identical contents do not change the file");
        assert_eq!(shell.uploads(), vec![("/f".to_string(), 0o600)]);
        assert_eq!(shell.commands().len(), 3);
    }
}
