//! The command line as a person meets it: help with examples for every subcommand, the
//! version with its commit, completions and the man page generated from the parser, and
//! `status` before, during and after a run of `up` in a test host.

mod support;

use std::process::{Command, Output};

use support::netns::{Shape, TestHost};
use support::up::Up;

fn imds_tun(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imds-tun"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run imds-tun: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommands `--help` lists.
fn subcommands() -> Vec<String> {
    let help = stdout(&imds_tun(&["--help"]));
    let list = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_else(|| panic!("no Commands section in\n{help}"));
    // A name starts its line after two spaces; deeper lines continue a description.
    let names: Vec<String> = list
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    names
}

#[test]
fn every_subcommand_has_examples_and_the_top_level_exit_codes() {
    let top = stdout(&imds_tun(&["--help"]));
    for code in ["  0  ", "  1  ", "  2  ", "  3  "] {
        assert!(top.contains(code), "exit code {code} not in --help:\n{top}");
    }
    for name in subcommands() {
        help_shows_itself(&[&name]);
    }
}

/// `imds-tun WORDS --help`, which must have examples that show `imds-tun WORDS`; the help.
fn help_shows_itself(words: &[&str]) -> String {
    let name = words.join(" ");
    let out = imds_tun(&[words, &["--help"]].concat());
    assert!(out.status.success(), "{name} --help failed");
    let help = stdout(&out);
    let examples = help
        .split("Examples:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{name} --help has no examples:\n{help}"));
    assert!(
        examples.contains(&format!("imds-tun {name}")),
        "{name}'s examples do not show it:\n{examples}"
    );
    help
}

#[test]
fn version_names_the_commit() {
    let version = stdout(&imds_tun(&["--version"]));
    let git = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let commit = match git {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown".to_string(),
    };
    assert_eq!(
        version.trim(),
        format!("imds-tun {} ({commit})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions_and_man_page_come_from_the_parser() {
    let names = subcommands();
    let bash = imds_tun(&["completions", "bash"]);
    assert!(bash.status.success());
    let script = stdout(&bash);
    for name in &names {
        assert!(
            script.contains(name.as_str()),
            "bash completion lacks {name}"
        );
    }
    let syntax = Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = imds_tun(&["completions", shell]);
        assert!(
            out.status.success() && stdout(&out).contains("imds-tun"),
            "{shell}"
        );
    }
    assert!(!imds_tun(&["completions", "tcsh"]).status.success());
    let man = stdout(&imds_tun(&["man"]));
    assert!(
        man.starts_with(".ie") || man.contains("\n.TH imds-tun 1"),
        "{man}"
    );
    assert!(man.contains(".SH NAME"), "{man}");
    for name in &names {
        assert!(
            man.contains(&name.replace('-', "\\-")),
            "man page lacks {name}"
        );
    }
}

#[test]
fn status_before_during_and_after_up() {
    let host = TestHost::new(Shape::LoopbackOnly);
    let state = host.dir().join("state");
    let state_arg = state.display().to_string();
    let status = || {
        host.command(env!("CARGO_BIN_EXE_imds-tun"))
            .args(["status", "--state-dir", &state_arg])
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let before = status();
    assert_eq!(before.status.code(), Some(3), "{}", stdout(&before));
    assert!(stdout(&before).contains("not running"));
    assert!(!state.exists(), "status created the state directory");

    let up = Up::start(&host, ["--metrics", "127.0.0.1:9100"]);
    host.sh("curl -sS -o /dev/null http://169.254.169.254/latest/meta-data/instance-id");
    let during = status();
    let text = stdout(&during);
    assert_eq!(during.status.code(), Some(0), "{text}");
    let pid = up.child.id();
    assert!(
        text.contains(&format!("running on imds0 (pid {pid})")),
        "{text}"
    );
    assert!(text.contains("169.254.169.254/32"), "{text}");
    assert!(
        text.contains("metrics:   http://127.0.0.1:9100/metrics"),
        "{text}"
    );
    assert!(text.contains("requests:  1 (aws 1)"), "{text}");

    // Killed: the changes stay until `down`.
    up.signal(libc::SIGKILL);
    let _ = up.wait(std::time::Duration::from_secs(5));
    let dead = status();
    assert_eq!(dead.status.code(), Some(1), "{}", stdout(&dead));
    assert!(stdout(&dead).contains("imds-tun down"), "{}", stdout(&dead));
    let down = host
        .command(env!("CARGO_BIN_EXE_imds-tun"))
        .args(["down", "--state-dir", &state_arg])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(down.status.success());
    let after = status();
    assert_eq!(after.status.code(), Some(3), "{}", stdout(&after));
}

#[test]
fn ctl_event_and_fault_have_help_and_refuse_mistakes_without_a_server() {
    for noun in ["event", "fault"] {
        let help = help_shows_itself(&["ctl", noun]);
        assert!(help.contains("Forms:"), "{help}");
    }
    let nowhere = "/nonexistent/imds-tun-ctl.sock";
    let out = imds_tun(&[
        "ctl", "--socket", nowhere, "event", "aws", "--spot", "explode",
    ]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--spot `explode`: expected one of"), "{err}");
    let out = imds_tun(&["ctl", "--socket", nowhere, "fault", "add", "/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exactly one of --status"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = imds_tun(&["ctl", "--socket", nowhere, "event", "list"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no server: a failure, not usage"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}
