//! Rendered files (`LOCKBOX_RENDER=SRC:DEST[,SRC:DEST...]`): for programs that read their
//! secrets from a config file. Each template `SRC` is read once; its references are
//! resolved through the cache (all templates' references in one round) and the result is
//! written to `DEST`, which must lie under `/tmp` (`LOCKBOX_RENDER_ROOT`).
//!
//! A file is written with mode 0600 to a temporary file in the same directory, synced and
//! renamed over `DEST`, so a reader sees the old file or the new one, never half of one.
//! A template whose references cannot all be resolved is reported and not written.
//!
//! The lifecycle renders during Init, after prefetch, and again on each INVOKE after
//! refresh: only files whose rendered content changed (compared by a keyed hash, so the
//! values themselves are not kept) are written again.

use std::collections::hash_map::RandomState;
use std::fs::{self, OpenOptions};
use std::hash::BuildHasher;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

use super::reference::resolve::{self, Fetch};
use super::reference::{self, Template};

/// Where rendered files may be written unless `LOCKBOX_RENDER_ROOT` says otherwise: the
/// only writable place in a Lambda environment.
pub const DEFAULT_RENDER_ROOT: &str = "/tmp";
/// Largest template read.
const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// One file to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderTarget {
    /// The template (absolute path, typically in the deployment package).
    pub source: PathBuf,
    /// Where the rendered file goes (absolute, under the render root).
    pub dest: PathBuf,
}

/// Every file to render, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderPlan {
    /// The files.
    pub targets: Vec<RenderTarget>,
    /// The directory every destination lies under.
    pub root: PathBuf,
}

/// An entry of `LOCKBOX_RENDER` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry:?}: {reason}")]
pub struct RenderPlanError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

impl RenderPlan {
    /// Parses comma-separated `SRC:DEST` entries (blank ones ignored). Both paths are
    /// absolute; `DEST` lies under `root`, without `.` or `..` parts, and is named once.
    pub fn parse(raw: &str, root: &Path) -> Result<Self, RenderPlanError> {
        let mut targets: Vec<RenderTarget> = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let error = |reason: String| RenderPlanError {
                entry: entry.to_owned(),
                reason,
            };
            let (source, dest) = entry
                .split_once(':')
                .map(|(s, d)| (s.trim(), d.trim()))
                .ok_or_else(|| error("expected SRC:DEST".into()))?;
            let (source, dest) = (PathBuf::from(source), PathBuf::from(dest));
            if !source.is_absolute() {
                return Err(error("the template SRC must be an absolute path".into()));
            }
            let plain = |p: &Path| {
                p.components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            };
            if !dest.is_absolute() || !plain(&dest) {
                return Err(error(
                    "DEST must be an absolute path without '.' or '..' parts".into(),
                ));
            }
            if !dest.starts_with(root) || dest == root {
                return Err(error(format!(
                    "DEST must be a file under {} (LOCKBOX_RENDER_ROOT)",
                    root.display()
                )));
            }
            if targets.iter().any(|t| t.dest == dest) {
                return Err(error("DEST is named by another entry too".into()));
            }
            targets.push(RenderTarget { source, dest });
        }
        Ok(Self {
            targets,
            root: root.to_owned(),
        })
    }

    /// Whether there is nothing to render.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// What a render round did.
#[derive(Debug, Default)]
pub struct RenderReport {
    /// Files written.
    pub written: usize,
    /// Files whose content had not changed.
    pub unchanged: usize,
    /// Files not written, each with the template, destination and reason (names, never
    /// values).
    pub failures: Vec<String>,
}

/// A template, loaded, and what was last written from it.
#[derive(Debug)]
struct File {
    target: RenderTarget,
    template: Result<Template, TemplateError>,
    /// Keyed hash of the content last written.
    written: Option<u64>,
}

/// Renders the plan's files, keeping what it needs to tell whether a file changed.
#[derive(Debug)]
pub struct Renderer {
    root: PathBuf,
    files: Vec<File>,
    hasher: RandomState,
    /// Whether template load failures were reported already (they are, once).
    reported_loads: bool,
}

impl Renderer {
    /// Reads and parses every template. A template that cannot be read or parsed is
    /// reported by the first [`Renderer::render`].
    pub fn load(plan: &RenderPlan) -> Self {
        let files = plan
            .targets
            .iter()
            .map(|target| File {
                target: target.clone(),
                template: load_template(&target.source),
                written: None,
            })
            .collect();
        Self {
            root: plan.root.clone(),
            files,
            hasher: RandomState::new(),
            reported_loads: false,
        }
    }

    /// Whether there is nothing to render.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Resolves every template's references in one round and writes the files whose
    /// content changed.
    pub async fn render(&mut self, fetch: &dyn Fetch) -> RenderReport {
        let mut report = RenderReport::default();
        let references: Vec<_> = self
            .files
            .iter()
            .filter_map(|f| f.template.as_ref().ok())
            .flat_map(|t| t.references().map(|(_, r)| r))
            .collect();
        let resolved = resolve::resolve(fetch, references).await;
        let report_loads = !std::mem::replace(&mut self.reported_loads, true);
        for file in &mut self.files {
            let named = format!(
                "{} -> {}",
                file.target.source.display(),
                file.target.dest.display()
            );
            let template = match &file.template {
                Ok(template) => template,
                Err(problem) => {
                    if report_loads {
                        report.failures.push(format!("{named}: {problem}"));
                    }
                    continue;
                }
            };
            let content = template.substitute(|written, reference| {
                resolved
                    .value(reference)
                    .map_err(|err| format!("{written}: {err}"))
            });
            let content = match content {
                Ok(content) => content,
                Err(problem) => {
                    report.failures.push(format!("{named}: {problem}"));
                    continue;
                }
            };
            let hash = self.hasher.hash_one(content.as_bytes());
            if file.written == Some(hash) {
                report.unchanged += 1;
                continue;
            }
            let dest = file.target.dest.clone();
            let root = self.root.clone();
            let outcome =
                tokio::task::spawn_blocking(move || write_atomically(&root, &dest, content))
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("the writing task failed")));
            match outcome {
                Ok(()) => {
                    file.written = Some(hash);
                    report.written += 1;
                }
                Err(err) => report
                    .failures
                    .push(format!("{named}: could not write: {err}")),
            }
        }
        report
    }
}

/// Why a template could not be loaded (reported by the first render).
#[derive(Debug, thiserror::Error)]
enum TemplateError {
    /// The file could not be read.
    #[error("could not read the template: {0}")]
    Read(#[source] std::io::Error),
    /// The file is larger than [`MAX_TEMPLATE_BYTES`].
    #[error("the template is larger than {MAX_TEMPLATE_BYTES} bytes")]
    TooLarge,
    /// The file is not UTF-8 text.
    #[error("could not read the template as UTF-8 text: {0}")]
    NotText(#[source] std::io::Error),
    /// A reference in it is malformed.
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
}

fn load_template(source: &Path) -> Result<Template, TemplateError> {
    let metadata = fs::metadata(source).map_err(TemplateError::Read)?;
    if metadata.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::TooLarge);
    }
    let text = fs::read_to_string(source).map_err(TemplateError::NotText)?;
    Ok(reference::parse(&text)?)
}

/// Distinguishes temporary files of concurrent writes from one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `content` to `dest` through a temporary file in the same directory: mode 0600,
/// synced, renamed over `dest`. The directory is created (mode 0700) if missing, and must
/// still lie under `root` once symbolic links are followed.
pub fn write_atomically(
    root: &Path,
    dest: &Path,
    content: Zeroizing<String>,
) -> std::io::Result<()> {
    let invalid =
        |message: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, message.to_owned());
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(invalid("DEST names no file"));
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if !fs::canonicalize(dir)?.starts_with(fs::canonicalize(root)?) {
        return Err(invalid("DEST's directory leads outside the render root"));
    }
    let temp = dir.join(format!(
        ".{}.lockbox-{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // The umask can only take bits away; set the mode exactly.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, dest)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // Make the rename itself durable; a failure here does not undo the write.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::reference::resolve::tests::{sample, FakeFetch};

    /// A fresh directory under the system's temporary directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "lockbox-render-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(fs::canonicalize(dir).unwrap())
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn writes_whole_files_with_mode_0600_and_no_leftovers() {
        let scratch = Scratch::new("write");
        let dest = scratch.0.join("deep/er/app.conf");
        write_atomically(&scratch.0, &dest, Zeroizing::new("one".into())).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "one");
        assert_eq!(mode(&dest), 0o600);
        assert_eq!(mode(dest.parent().unwrap()), 0o700);
        // Replacing keeps the mode even if the old file was made readable meanwhile.
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&scratch.0, &dest, Zeroizing::new("two".into())).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "two");
        assert_eq!(mode(&dest), 0o600);
        assert!(leftovers(dest.parent().unwrap()).is_empty());
    }

    #[test]
    fn refuses_a_directory_that_leads_outside_the_root() {
        let root = Scratch::new("root");
        let outside = Scratch::new("outside");
        std::os::unix::fs::symlink(&outside.0, root.0.join("escape")).unwrap();
        let err = write_atomically(
            &root.0,
            &root.0.join("escape/x.conf"),
            Zeroizing::new("v".into()),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(fs::read_dir(&outside.0).unwrap().next().is_none());
    }

    fn plan(scratch: &Scratch, templates: &[(&str, &str)]) -> RenderPlan {
        let mut raw = Vec::new();
        for (name, text) in templates {
            let source = scratch.0.join(format!("{name}.tmpl"));
            if !text.is_empty() {
                fs::write(&source, text).unwrap();
            }
            raw.push(format!(
                "{}:{}",
                source.display(),
                scratch.0.join("out").join(name).display()
            ));
        }
        RenderPlan::parse(&raw.join(","), &scratch.0).unwrap()
    }

    #[tokio::test]
    async fn renders_once_rewrites_on_change_and_never_half_writes() {
        let scratch = Scratch::new("renderer");
        let plan = plan(
            &scratch,
            &[
                (
                    "app.yaml",
                    "host: {{resolve:ssm:/app/host}}\npassword: {{resolve:ssm-secure:/app/pw}}\n\
                     azure: {{resolve:secretsmanager:dev/azure:SecretString:ConnectionString}}\n\
                     other: {{ mustache }}\n",
                ),
                ("static.txt", "no references here\n"),
            ],
        );
        let out = scratch.0.join("out");
        let mut fetch = sample();
        let mut renderer = Renderer::load(&plan);
        let report = renderer.render(&fetch).await;
        assert_eq!(
            (report.written, report.failures.len()),
            (2, 0),
            "{report:?}"
        );
        let app = out.join("app.yaml");
        assert_eq!(
            fs::read_to_string(&app).unwrap(),
            "host: db.local\npassword: hunter2\nazure: Endpoint=sb://x\nother: {{ mustache }}\n"
        );
        assert_eq!(mode(&app), 0o600);
        // One round for both files: one read per group.
        assert_eq!(fetch.calls().len(), 3, "{:?}", fetch.calls());

        // Nothing changed: nothing written (an edit made meanwhile stays).
        fs::write(&app, "edited").unwrap();
        let report = renderer.render(&fetch).await;
        assert_eq!((report.written, report.unchanged), (0, 2));
        assert_eq!(fs::read_to_string(&app).unwrap(), "edited");

        // A value changed: only the file that uses it is written.
        fetch.set_parameter("/app/pw", "SecureString", "rotated");
        let report = renderer.render(&fetch).await;
        assert_eq!((report.written, report.unchanged), (1, 1));
        assert!(fs::read_to_string(&app)
            .unwrap()
            .contains("password: rotated\n"));

        // A value that can no longer be read: reported, the file keeps its last content.
        fetch.parameters.retain(|(name, _, _)| name != "/app/host");
        let report = renderer.render(&fetch).await;
        assert_eq!(report.written, 0);
        assert_eq!(report.failures.len(), 1);
        let failure = &report.failures[0];
        assert!(failure.contains("app.yaml.tmpl ->"), "{failure}");
        assert!(failure.contains("{{resolve:ssm:/app/host}}"), "{failure}");
        assert!(
            !failure.contains("rotated") && !failure.contains("Endpoint"),
            "{failure}"
        );
        assert!(fs::read_to_string(&app)
            .unwrap()
            .contains("password: rotated\n"));
        assert!(leftovers(&out).is_empty());
    }

    #[tokio::test]
    async fn unreadable_or_malformed_templates_are_reported_once_and_not_written() {
        let scratch = Scratch::new("broken");
        let plan = plan(
            &scratch,
            &[
                ("missing.conf", ""),
                ("bad.conf", "x={{resolve:ssm:/a:latest}}"),
                ("unresolvable.conf", "x={{resolve:ssm:/nope}}"),
            ],
        );
        let fetch = FakeFetch::default();
        let mut renderer = Renderer::load(&plan);
        let report = renderer.render(&fetch).await;
        assert_eq!(report.written, 0);
        assert_eq!(report.failures.len(), 3, "{report:?}");
        assert!(report.failures[0].contains("could not read the template"));
        assert!(report.failures[1].contains("{{resolve:ssm:/a:latest}}"));
        assert!(report.failures[2].contains("parameter does not exist"));
        assert!(!scratch.0.join("out").exists());
        // Templates that could not be loaded are not reported again on each invoke.
        let report = renderer.render(&fetch).await;
        assert_eq!(report.failures.len(), 1);
    }
}
