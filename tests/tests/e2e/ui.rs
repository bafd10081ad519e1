//! `tollgate check` UI tests, in the style of Spin's `tests/ui/`.
//!
//! Every folder in `tests/ui/` is one case: a gateway file `tollgate.toml`,
//! the manifests (and any other files) it names, and `expected.txt`, the
//! exact output of `tollgate check tollgate.toml`:
//!
//! - if `expected.txt` starts with `ok:`, the check must succeed (exit 0),
//!   print exactly that on stdout and nothing on stderr;
//! - otherwise it must fail (non-zero exit), print exactly that on stderr
//!   and nothing on stdout.
//!
//! Case files write `$PLUGINS` for the folder of the plugins built from this
//! tree. Each case is copied to a temporary folder with `$PLUGINS` replaced
//! by the real folder; in the output, the temporary folder reads `$DIR` and
//! the plugin folder `$PLUGINS` again. Outputs are compared line by line,
//! ignoring trailing whitespace.
//!
//! To (re)write every `expected.txt` from the actual output:
//!
//! ```sh
//! TOLLGATE_BLESS=1 cargo test -p tollgate-tests --test e2e ui
//! ```
//!
//! then read each changed file: it is the message a person will get.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tollgate_tests::{plugin_dir, tollgate_bin};

/// The gateway file every case checks.
const GATEWAY_FILE: &str = "tollgate.toml";
/// The expected output, next to it.
const EXPECTED: &str = "expected.txt";
/// What case files write for the plugin folder.
const PLUGINS_VAR: &str = "$PLUGINS";
/// What the output shows for the case folder.
const DIR_VAR: &str = "$DIR";
/// A check that takes longer than this is killed and reported.
const TIMEOUT: Duration = Duration::from_secs(180);

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui")
}

fn blessing() -> bool {
    std::env::var_os("TOLLGATE_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// What one run of `tollgate check` produced, with paths replaced.
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Line endings unified, trailing whitespace removed from every line and
/// from the end.
fn normalize(text: &str) -> String {
    text.replace("\r\n", "\n")
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

/// The plugin folder as written into case files (forward slashes, so it
/// is also valid inside a TOML basic string on Windows).
fn plugins_for_toml(plugins: &Path) -> String {
    plugins.display().to_string().replace('\\', "/")
}

/// Copy the case folder `src` to `dst`, replacing `$PLUGINS` in TOML files.
/// `expected.txt` is left out. A `NAME.wasm.hex` file (hex digits, spaces
/// and newlines ignored) becomes the binary `NAME.wasm`, so no binary is
/// committed.
fn copy_case(src: &Path, dst: &Path, plugins: &str, top: bool) -> std::io::Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_case(&from, &to, plugins, false)?;
        } else if top && entry.file_name() == EXPECTED {
            continue;
        } else if let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".hex"))
        {
            let text = fs::read_to_string(&from)?;
            let digits: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
            let bytes: Vec<u8> = digits
                .chunks(2)
                .map(|p| {
                    u8::from_str_radix(std::str::from_utf8(p).unwrap_or("00"), 16).unwrap_or(0)
                })
                .collect();
            fs::write(dst.join(name), bytes)?;
        } else if from.extension().is_some_and(|e| e == "toml") {
            let text = fs::read_to_string(&from)?;
            fs::write(&to, text.replace(PLUGINS_VAR, plugins))?;
        } else {
            fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Replace each `(path, name)` in `text`, in order.
fn replace_paths(text: &str, paths: &[(String, &str)]) -> String {
    let mut text = text.to_string();
    for (path, name) in paths {
        if !path.is_empty() {
            text = text.replace(path.as_str(), name);
        }
    }
    text
}

/// Copy the case to a temporary folder and run `tollgate check` on it.
fn run_case(case: &Path, bin: &Path, plugins: &Path) -> Result<Outcome, String> {
    let tmp = tempfile::Builder::new()
        .prefix("tollgate-ui-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary folder: {e}"))?;
    let dir = tmp.path().join("case");
    let plugins_toml = plugins_for_toml(plugins);
    copy_case(case, &dir, &plugins_toml, true)
        .map_err(|e| format!("cannot copy the case to {}: {e}", dir.display()))?;
    let canonical = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    let out_path = tmp.path().join("stdout");
    let err_path = tmp.path().join("stderr");
    let out = fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .arg("check")
        .arg(dir.join(GATEWAY_FILE))
        .current_dir(&dir)
        .env_remove("TOLLGATE_LOG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`tollgate check` ran longer than {TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for `tollgate check`: {e}")),
        }
    };
    let read = |p: &Path| {
        fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    // The plugin folder first: it is never inside the case folder.
    let mut paths = vec![(plugins_toml, PLUGINS_VAR)];
    if let Ok(p) = plugins.canonicalize() {
        paths.push((p.display().to_string(), PLUGINS_VAR));
    }
    paths.push((plugins.display().to_string(), PLUGINS_VAR));
    paths.push((canonical.display().to_string(), DIR_VAR));
    paths.push((dir.display().to_string(), DIR_VAR));
    Ok(Outcome {
        status,
        stdout: normalize(&replace_paths(&read(&out_path)?, &paths)),
        stderr: normalize(&replace_paths(&read(&err_path)?, &paths)),
    })
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (nothing)\n".to_string();
    }
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// Compare one case's outcome with its `expected.txt`; `None` if it matches.
fn compare(expected: &str, got: &Outcome) -> Option<String> {
    let want_ok = expected.starts_with("ok:");
    let mut problems = String::new();
    let (stream, actual, other_name, other) = if want_ok {
        ("stdout", &got.stdout, "stderr", &got.stderr)
    } else {
        ("stderr", &got.stderr, "stdout", &got.stdout)
    };
    if got.status.success() != want_ok {
        let want = if want_ok {
            "success (exit 0)"
        } else {
            "failure (non-zero exit)"
        };
        let _ = writeln!(problems, "  expected {want}, got {}", got.status);
    }
    if actual != expected {
        let _ = write!(
            problems,
            "  {stream} differs.\n  expected:\n{}  actual:\n{}",
            indent(expected),
            indent(actual)
        );
    }
    if !other.is_empty() {
        let _ = write!(
            problems,
            "  expected nothing on {other_name}, got:\n{}",
            indent(other)
        );
    }
    (!problems.is_empty()).then_some(problems)
}

/// Check (or, with `TOLLGATE_BLESS=1`, write the expectation of) one case.
fn check_case(case: &Path, bin: &Path, plugins: &Path, bless: bool) -> Option<String> {
    if !case.join(GATEWAY_FILE).is_file() {
        return Some(format!("  the case has no {GATEWAY_FILE}\n"));
    }
    let got = match run_case(case, bin, plugins) {
        Ok(got) => got,
        Err(e) => return Some(format!("  {e}\n")),
    };
    let expected_path = case.join(EXPECTED);
    if bless {
        let text = if got.status.success() {
            &got.stdout
        } else {
            &got.stderr
        };
        return fs::write(&expected_path, format!("{text}\n"))
            .err()
            .map(|e| format!("  cannot write {}: {e}\n", expected_path.display()));
    }
    match fs::read_to_string(&expected_path) {
        Ok(expected) => compare(&normalize(&expected), &got),
        Err(e) => Some(format!(
            "  cannot read {}: {e} (run with TOLLGATE_BLESS=1 to create it)\n  actual stdout:\n{}  actual stderr:\n{}",
            expected_path.display(),
            indent(&got.stdout),
            indent(&got.stderr)
        )),
    }
}

#[test]
fn check_output_matches_expected() {
    let root = cases_dir();
    let mut cases: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .map(|e| e.expect("reading the case folder").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "{} holds no cases (folders with {GATEWAY_FILE} and {EXPECTED})",
        root.display()
    );

    let bin = tollgate_bin();
    let plugins = plugin_dir();
    let bless = blessing();

    // A few cases at a time: each check compiles its plugins.
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(case) = cases.get(i) else { break };
                        done.push((i, check_case(case, &bin, &plugins, bless)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a UI test worker panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);

    let mut report = String::new();
    let mut failed = 0;
    for (i, problem) in results {
        let name = cases[i].file_name().unwrap().to_string_lossy();
        match problem {
            Some(p) => {
                failed += 1;
                let _ = write!(report, "\n--- {name}\n{p}");
            }
            None if bless => println!("ui: {name} ... written"),
            None => println!("ui: {name} ... ok"),
        }
    }
    if bless && failed == 0 {
        println!("ui: wrote {EXPECTED} for {} case(s)", cases.len());
    }
    assert!(
        failed == 0,
        "{failed} of {} UI case(s) in {} failed:\n{report}\n\
         (if the new output is right, rerun with TOLLGATE_BLESS=1 and read the changed {EXPECTED} files)",
        cases.len(),
        root.display()
    );
}
