//! The README cannot drift from the product:
//!
//! - every ```` ```sh ```` block is valid shell (`bash -n`);
//! - every `imds-tun` and `install/install.sh` invocation in those blocks and in inline code
//!   (`` `imds-tun status [--metrics ADDR]` ``) names a subcommand that exists and only
//!   options that its `--help` lists;
//! - every block tagged ```` ```sh run ```` is run, in README order, in a test host where
//!   `imds-tun up` and `imds-tun serve` run as the README describes ([`ReadmeHost`]), and
//!   must succeed (every command: `bash -euo pipefail`, curl failing on any HTTP error) and
//!   print something.
//!
//! Blocks not run, and why (the first two rules still check them):
//! - building and testing the project itself (`cargo build`, `tests/run`): this test is part
//!   of that run;
//! - `install/install.sh` on the real machine: it writes /usr/local and enables a systemd
//!   unit; `tests/install.rs` runs it into a throwaway root instead;
//! - `docker`: no container engine on the test machine;
//! - the fleet's `ip netns add`: it names network namespaces machine-wide; `tests/fleet.rs`
//!   builds the same topology under names of its own.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use support::netns::{Shape, TestHost};
use support::up::Up;

struct Block {
    info: String,
    line: usize,
    text: String,
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The fenced code blocks, with their info string and first line.
fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            match current.take() {
                Some(b) => out.push(b),
                None => {
                    current = Some(Block {
                        info: info.trim().to_string(),
                        line: i + 1,
                        text: String::new(),
                    })
                }
            }
        } else if let Some(b) = &mut current {
            b.text.push_str(line);
            b.text.push('\n');
        }
    }
    out
}

fn sh_blocks(text: &str) -> Vec<Block> {
    blocks(text)
        .into_iter()
        .filter(|b| b.info.split_whitespace().next() == Some("sh"))
        .collect()
}

/// Shell words of `command`, quotes removed; shell operators are words of their own.
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if word.is_empty() => break, // a comment
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            (None, '|' | ';' | '&' | '>' | '<' | '(' | ')') => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                out.push(c.to_string());
                while chars.peek().is_some_and(|n| "|&>".contains(*n)) {
                    chars.next();
                }
            }
            (None, '\\') => {}
            (None, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The commands of a block: continuation lines joined.
fn commands(block: &str) -> Vec<String> {
    let joined = block.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Which program an invocation runs, for the help to check it against.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Program {
    ImdsTun,
    InstallSh,
}

fn program(word: &str) -> Option<Program> {
    let base = word.rsplit('/').next().unwrap_or(word);
    match base {
        "imds-tun" => Some(Program::ImdsTun),
        "install.sh" => Some(Program::InstallSh),
        _ => None,
    }
}

const OPERATORS: [&str; 7] = ["|", ";", "&", ">", "<", "(", ")"];

/// One invocation: the program, its subcommand (imds-tun), its long options and its other
/// words after the subcommand (where a nested subcommand is: `ctl event`).
type Invocation = (Program, Option<String>, Vec<String>, Vec<String>);

/// Every invocation in `words` (a program in command position: first, or after an operator,
/// `sudo`, `exec` or a variable assignment).
fn invocations(words: &[String]) -> Vec<Invocation> {
    let mut out = Vec::new();
    let mut command_position = true;
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        i += 1;
        if OPERATORS.contains(&w) {
            command_position = true;
            continue;
        }
        if !command_position {
            continue;
        }
        let Some(p) = program(w) else {
            let prefix = w == "sudo" || w == "exec" || (w.contains('=') && !w.starts_with('-'));
            command_position = prefix;
            continue;
        };
        command_position = false;
        let mut sub = None;
        let mut options = Vec::new();
        let mut rest = Vec::new();
        while i < words.len() && !OPERATORS.contains(&words[i].as_str()) {
            let w = &words[i];
            if let Some(opt) = w.strip_prefix("--") {
                let name = opt.split('=').next().unwrap_or(opt);
                options.push(format!("--{name}"));
                if name == "log-format" {
                    i += 1; // its value is no subcommand
                }
            } else if p == Program::ImdsTun && sub.is_none() && !w.starts_with('-') {
                sub = Some(w.clone());
            } else if sub.is_some() {
                rest.push(w.clone());
            }
            i += 1;
        }
        out.push((p, sub, options, rest));
    }
    out
}

/// Inline code spans outside code blocks that invoke imds-tun.
fn inline_invocations(text: &str) -> Vec<String> {
    let mut in_block = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            let span = span.trim_start_matches("sudo ");
            if i % 2 == 1 && span.starts_with("imds-tun ") {
                // Placeholders and alternatives: `[--metrics ADDR]`, `bash\|zsh`.
                out.push(span.replace(['[', ']'], " ").replace("\\|", " "));
            }
        }
    }
    out
}

fn help(p: Program, sub: Option<&str>, cache: &mut HashMap<String, String>) -> String {
    let key = format!("{p:?} {sub:?}");
    cache
        .entry(key)
        .or_insert_with(|| {
            let mut cmd = match p {
                Program::ImdsTun => Command::new(env!("CARGO_BIN_EXE_imds-tun")),
                Program::InstallSh => {
                    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("install/install.sh"))
                }
            };
            cmd.args(sub.iter().flat_map(|s| s.split(' ')))
                .arg("--help");
            let out = cmd.output().unwrap_or_else(|e| panic!("{e}"));
            assert!(
                out.status.success(),
                "{p:?} {sub:?} --help failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .clone()
}

/// Whether `help` lists `option` (as a whole word).
fn lists(help: &str, option: &str) -> bool {
    help.match_indices(option).any(|(i, _)| {
        !help[i + option.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn every_sh_block_is_valid_shell() {
    let text = readme();
    let blocks = sh_blocks(&text);
    assert!(blocks.len() >= 4, "sh blocks: {}", blocks.len());
    for b in blocks {
        let out = Command::new("bash")
            .args(["-n", "-c", &b.text])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "README.md:{}: not valid shell: {}",
            b.line,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_command_in_the_readme_exists_with_its_options() {
    let text = readme();
    let mut all = Vec::new();
    for b in sh_blocks(&text) {
        for c in commands(&b.text) {
            all.push((format!("README.md:{}", b.line), c));
        }
    }
    for span in inline_invocations(&text) {
        all.push(("README.md (inline)".to_string(), span));
    }
    let mut cache = HashMap::new();
    let subcommands = help(Program::ImdsTun, None, &mut cache);
    let mut checked = 0;
    for (where_, command) in &all {
        for (p, sub, options, rest) in invocations(&words(command)) {
            if let Some(s) = &sub {
                assert!(
                    subcommands.contains(&format!("\n  {s} ")),
                    "{where_}: `{command}`: imds-tun has no subcommand {s}"
                );
            }
            // A nested subcommand (`ctl event`) has options of its own; those before it
            // (`ctl --socket S event ...`) are its parent's.
            let help = help(p, sub.as_deref(), &mut cache);
            let nested = match &sub {
                Some(s) if p == Program::ImdsTun => rest
                    .iter()
                    .find(|w| help.contains(&format!("\n  {w} ")))
                    .map(|n| format!("{s} {n}")),
                _ => None,
            };
            let nested_help = nested
                .as_deref()
                .map(|n| self::help(p, Some(n), &mut cache));
            for o in &options {
                assert!(
                    lists(&help, o) || nested_help.as_deref().is_some_and(|h| lists(h, o)),
                    "{where_}: `{command}`: {o} is not an option of {p:?} {}",
                    nested.as_deref().or(sub.as_deref()).unwrap_or("")
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} invocations found");
}

/// The machine the README describes, inside a test host (its own network namespace and a
/// private mount namespace: nothing of the real machine's network, /run or /var/lib is seen or
/// touched):
///
/// - `sudo imds-tun up --config FILE --metrics 127.0.0.1:9464` runs (FILE a copy of the
///   default configuration, so `ctl set --persist` has a file to write);
/// - `imds-tun serve --listen 127.0.0.1:8080 --ctl /tmp/imds.sock` runs beside it, for the
///   blocks that show the SDKs' overrides (the README says to start it; starting it here is
///   what makes those blocks independent of timing);
/// - `/run/imds-tun` and `/var/lib/imds-tun` are up's own state and key directories, so `ctl`,
///   `status`, `jwks` and `ca` find them at their default paths; `/tmp` is private;
/// - `imds-tun` is on the PATH, `sudo` runs its arguments, `python3` is the test venv's (the
///   pinned SDKs of tests/sdk/requirements.txt), `curl` fails on HTTP errors and after 10 s;
/// - the environment is empty but for PATH and HOME (a scratch directory, also the working
///   directory): no cloud configuration of the developer's leaks in.
struct ReadmeHost {
    host: TestHost,
    path: String,
    _up: Up,
    serve: std::process::Child,
}

/// Runs `program` with `/run/imds-tun`, `/var/lib/imds-tun` and `/tmp` of the test host: the
/// first two do not exist on the machine (and may not be created there), so tmpfs covers /run
/// and /var/lib in this mount namespace and the directories are bind-mounted into them.
const PRIVATE_DIRS: &str = r#"mount -t tmpfs tmpfs /run && mkdir /run/imds-tun && mount --bind "$0" /run/imds-tun && mount -t tmpfs tmpfs /var/lib && mkdir /var/lib/imds-tun && mount --bind "$1" /var/lib/imds-tun || exit 1; shift; exec "$@""#;

impl ReadmeHost {
    fn start() -> ReadmeHost {
        let host = TestHost::new(Shape::LoopbackOnly);
        let dir = host.dir().to_path_buf();
        let bin = dir.join("bin");
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        for (d, mode) in [
            ("bin", 0o755),
            ("state", 0o700),
            ("keys", 0o700),
            ("tmp", 0o1777),
            ("home", 0o755),
        ] {
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(dir.join(d))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_imds-tun"), bin.join("imds-tun"))
            .unwrap_or_else(|e| panic!("{e}"));
        for (name, body) in [
            ("sudo", "#!/bin/sh\nexec \"$@\"\n"),
            (
                "curl",
                "#!/bin/sh\nexec /usr/bin/curl --fail --silent --show-error --max-time 10 \"$@\"\n",
            ),
        ] {
            let path = bin.join(name);
            std::fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let config = dir.join("config.json");
        std::fs::write(&config, imds_tun::config::DEFAULT_JSON).unwrap_or_else(|e| panic!("{e}"));
        let venv_bin = support::python()
            .parent()
            .unwrap_or_else(|| panic!("venv python has no directory"))
            .display()
            .to_string();
        let path = format!(
            "{}:{venv_bin}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let up = Up::start(
            &host,
            [
                std::ffi::OsStr::new("--config"),
                config.as_os_str(),
                std::ffi::OsStr::new("--metrics"),
                std::ffi::OsStr::new("127.0.0.1:9464"),
            ],
        );
        // After up's ready line: the key store exists, so serve opens it rather than racing
        // to create it.
        let tmp = dir.join("tmp");
        let mut serve = host
            .command_with_mounts(env!("CARGO_BIN_EXE_imds-tun"), &[(tmp.as_path(), "/tmp")])
            .args([
                "serve",
                "--listen",
                "127.0.0.1:8080",
                "--ctl",
                "/tmp/imds.sock",
            ])
            .arg("--key-dir")
            .arg(dir.join("keys"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start serve: {e}"));
        let stdout = serve.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut ready = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ready.contains("serving"), "serve: {ready:?}");
        ReadmeHost {
            host,
            path,
            _up: up,
            serve,
        }
    }

    /// Runs a block with `bash -euo pipefail`; its output, or the failure with both streams.
    fn run(&self, b: &Block) -> String {
        let dir = self.host.dir();
        let tmp = dir.join("tmp");
        let out = self
            .host
            .command_with_mounts("sh", &[(tmp.as_path(), "/tmp")])
            .args(["-c", PRIVATE_DIRS])
            .arg(dir.join("state"))
            .arg(dir.join("keys"))
            .args(["env", "-i"])
            .arg(format!("PATH={}", self.path))
            .arg(format!("HOME={}", dir.join("home").display()))
            .args(["timeout", "60", "bash", "-euo", "pipefail", "-c", &b.text])
            .current_dir(dir.join("home"))
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "README.md:{} failed ({}):\n{stdout}\n{}",
            b.line,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.is_empty(), "README.md:{} printed nothing", b.line);
        stdout
    }
}

impl Drop for ReadmeHost {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

#[test]
fn run_blocks_succeed_against_up_in_a_test_host() {
    let text = readme();
    let run: Vec<Block> = sh_blocks(&text)
        .into_iter()
        .filter(|b| b.info.split_whitespace().any(|w| w == "run"))
        .collect();
    assert!(run.len() >= 8, "only {} ```sh run blocks", run.len());
    for b in &run {
        // `bash -e` ignores a failure on the left of `&&` or `||`: a run block must not hide
        // one there.
        assert!(
            !b.text.contains("&&") && !b.text.contains("||"),
            "README.md:{}: a ```sh run block may not use && or || (bash -e would not see a failure)",
            b.line
        );
    }
    let host = ReadmeHost::start();
    for b in &run {
        let started = std::time::Instant::now();
        let out = host.run(b);
        eprintln!("README.md:{}: ok in {:?}\n{out}", b.line, started.elapsed());
    }
}

#[test]
fn the_checks_see_a_wrong_option() {
    // The rules themselves can fail: a made-up option and subcommand are caught.
    let mut cache = HashMap::new();
    let inv = invocations(&words(
        "sudo imds-tun up --no-such-option && imds-tun frobnicate",
    ));
    assert_eq!(inv.len(), 2);
    let (p, sub, options, _) = &inv[0];
    assert_eq!(sub.as_deref(), Some("up"));
    assert!(!lists(&help(*p, sub.as_deref(), &mut cache), &options[0]));
    assert!(lists(&help(*p, sub.as_deref(), &mut cache), "--metrics"));
    assert!(!lists(&help(*p, sub.as_deref(), &mut cache), "--metric"));
    let subs = help(Program::ImdsTun, None, &mut cache);
    assert!(!subs.contains("\n  frobnicate "));
    // A nested subcommand's options are checked against its own help.
    let inv = invocations(&words("sudo imds-tun ctl event aws --spot terminate"));
    let (p, sub, options, rest) = &inv[0];
    assert_eq!((sub.as_deref(), rest[0].as_str()), (Some("ctl"), "event"));
    assert_eq!(options, &["--spot"]);
    let nested = help(*p, Some("ctl event"), &mut cache);
    assert!(lists(&nested, "--spot"));
    assert!(!lists(&nested, "--spott"));
}

/// The README's "SDK compatibility" table: its rows, each as its cells.
fn matrix_rows(text: &str) -> Vec<Vec<String>> {
    let start = text
        .find("## SDK compatibility")
        .unwrap_or_else(|| panic!("no SDK compatibility section"));
    let section = &text[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    section[..end]
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| client"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The compatibility matrix cannot drift: every pinned package of tests/sdk/requirements.txt
/// is in it at exactly its pinned version, every version it gives a pinned package is the
/// pin, and every test it names (`tests/FILE.rs::NAME`) is a `#[test] fn NAME` in that file.
#[test]
fn sdk_matrix_matches_requirements_and_names_real_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let requirements = std::fs::read_to_string(root.join("tests/sdk/requirements.txt"))
        .unwrap_or_else(|e| panic!("{e}"));
    let pins: HashMap<String, String> = requirements
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, version) = l
                .split_once("==")
                .unwrap_or_else(|| panic!("requirements.txt: {l:?} is not pinned with =="));
            (name.trim().to_ascii_lowercase(), version.trim().to_string())
        })
        .collect();
    assert!(pins.len() >= 6, "pins: {pins:?}");
    let rows = matrix_rows(&readme());
    assert!(rows.len() >= 10, "only {} matrix rows", rows.len());
    let mut named = std::collections::HashSet::new();
    let mut tests = 0;
    for row in &rows {
        assert_eq!(row.len(), 5, "matrix row {row:?}: five cells");
        // The package is the client cell's first word (`azure-identity: ...`, `PyJWT: ...`).
        let package = row[0]
            .split([':', ' '])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if let Some(pin) = pins.get(&package) {
            assert_eq!(&row[1], pin, "matrix: {package} is pinned at {pin}");
            named.insert(package);
        }
        let proofs: Vec<&str> = row[4].split('`').filter(|s| s.contains(".rs::")).collect();
        assert!(!proofs.is_empty(), "matrix row {:?} names no test", row[0]);
        for proof in proofs {
            let (file, name) = proof.split_once("::").unwrap_or(("", ""));
            let source = std::fs::read_to_string(root.join(file))
                .unwrap_or_else(|e| panic!("matrix: {proof}: {e}"));
            let at = source
                .find(&format!("\nfn {name}()"))
                .unwrap_or_else(|| panic!("matrix: {file} has no fn {name}"));
            assert!(
                source[..at].trim_end().ends_with("#[test]"),
                "matrix: {proof} is not a test"
            );
            tests += 1;
        }
    }
    let missing: Vec<&String> = pins.keys().filter(|p| !named.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "matrix lacks pinned packages {missing:?}"
    );
    assert!(tests >= 20, "only {tests} tests named");
}
