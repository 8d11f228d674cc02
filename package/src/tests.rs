//! Loading, rendering and lint of small in-memory packages.

use serde_json::json;

use super::*;

const MANIFEST: &str = r#"
name = "web"
version = "1.2.0"
app_version = "1.22"
description = "A test web server."
[notes]
install = "{{ instance }} runs {{ options.count }} servers"
"#;

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "count": {"type": "integer", "minimum": 1, "default": 2},
    "greeting": {"type": "string", "default": "hello"}
  }
}"#;

const JOB: &str = r#"name = {{ instance ~ "/server" }}
count = {{ options.count }}
[task]
command = "/bin/echo"
args = [{{ options.greeting }}]
"#;

fn files(job: &str) -> Files {
    let mut f = Files::new();
    f.insert(MANIFEST_FILE.into(), MANIFEST.as_bytes().to_vec());
    f.insert(SCHEMA_FILE.into(), SCHEMA.as_bytes().to_vec());
    f.insert("jobs/server.toml.j2".into(), job.as_bytes().to_vec());
    f
}

fn package(job: &str) -> Package {
    Package::from_files(files(job)).unwrap()
}

#[test]
fn renders_named_under_the_instance_with_labels() {
    let jobs = package(JOB)
        .render("team/w1", &json!({"count": 3}))
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let spec = &jobs[0].spec;
    assert_eq!(spec.name, "team/w1/server");
    assert_eq!(spec.count, Some(3));
    assert_eq!(spec.task.args, vec!["hello"]);
    assert_eq!(spec.labels[LABEL_INSTANCE], "team/w1");
    assert_eq!(spec.labels[LABEL_PACKAGE], "web@1.2.0");
    // The canonical TOML is a job file that validates to the same spec.
    assert_eq!(
        &shoal_model::JobSpec::from_toml(&jobs[0].toml).unwrap(),
        spec
    );
}

#[test]
fn tricky_option_values_stay_one_toml_value() {
    let evil = "x\"]\n[task.env]\nEVIL = \"1\" # é 🦀 \\";
    let jobs = package(JOB)
        .render("w", &json!({"greeting": evil}))
        .unwrap();
    assert_eq!(jobs[0].spec.task.args, vec![evil.to_owned()]);
    assert!(jobs[0].spec.task.env.is_empty());
}

#[test]
fn a_job_outside_the_instance_is_refused() {
    let p = package(&JOB.replace(r#"instance ~ "/server""#, r#""server""#));
    let e = p.render("w1", &json!({})).unwrap_err().to_string();
    assert!(
        e.contains("jobs/server.toml.j2") && e.contains("not under the instance \"w1\""),
        "{e}"
    );
    // A name that only starts with the instance's letters is not under it.
    let p = package(&JOB.replace(r#"instance ~ "/server""#, r#"instance ~ "x""#));
    assert!(p.render("w1", &json!({})).is_err());
    assert!(package(JOB).render("Bad Name", &json!({})).is_err());
}

#[test]
fn an_undefined_variable_names_the_template_line_and_expression() {
    let p = package(&JOB.replace("options.count", "options.cuont"));
    let e = p.render("w", &json!({})).unwrap_err();
    let RenderError::Template {
        file,
        line,
        message,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(file, "jobs/server.toml.j2");
    assert_eq!(*line, Some(2));
    assert!(message.contains("options.cuont"), "{message}");
}

#[test]
fn unknown_option_and_wrong_type_are_refused_before_rendering() {
    let p = package(JOB);
    let e = p
        .render("w", &json!({"counts": 3}))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("option /counts") && e.contains("did you mean \"count\""),
        "{e}"
    );
    let e = p
        .render("w", &json!({"count": "3"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("option /count: your value \"3\""), "{e}");
}

#[test]
fn quoting_a_value_twice_is_explained() {
    let p = package(&JOB.replace(
        "args = [{{ options.greeting }}]",
        r#"args = ["{{ options.greeting }}"]"#,
    ));
    let e = p.render("w", &json!({})).unwrap_err().to_string();
    assert!(
        e.contains("not valid TOML") && e.contains("quoted twice"),
        "{e}"
    );
}

#[test]
fn an_invalid_job_names_its_field() {
    let p = package(&JOB.replace("/bin/echo", ""));
    let e = p.render("w", &json!({})).unwrap_err().to_string();
    assert!(e.contains("task.command"), "{e}");
}

#[test]
fn bad_packages_are_refused_naming_the_file() {
    let mut f = files(JOB);
    f.insert(
        MANIFEST_FILE.into(),
        b"name = \"web\"\nversion = \"1\"\ndescription = \"x\"".to_vec(),
    );
    let e = Package::from_files(f).unwrap_err();
    assert_eq!(e.file, MANIFEST_FILE);
    let mut f = files(JOB);
    f.insert(
        MANIFEST_FILE.into(),
        format!("{MANIFEST}\nflavour = 1").into_bytes(),
    );
    assert!(
        Package::from_files(f)
            .unwrap_err()
            .message
            .contains("flavour")
    );
    let e = Package::from_files(files("name = {{ instance ")).unwrap_err();
    assert_eq!(e.file, "jobs/server.toml.j2");
    let mut f = files(JOB);
    f.remove("jobs/server.toml.j2");
    assert!(
        Package::from_files(f)
            .unwrap_err()
            .message
            .contains("no job template")
    );
}

#[test]
fn notes_render_with_the_options() {
    let p = package(JOB);
    assert_eq!(
        p.notes("w", &json!({}), false).unwrap().as_deref(),
        Some("w runs 2 servers")
    );
    assert_eq!(p.notes("w", &json!({}), true).unwrap(), None);
}

#[test]
fn lint_catches_a_missing_default() {
    let mut f = files(JOB);
    f.insert(
        SCHEMA_FILE.into(),
        br#"{"type": "object", "properties": {"count": {"type": "integer"}, "greeting": {"type": "string", "default": "x"}}}"#.to_vec(),
    );
    let findings = lint(&Package::from_files(f).unwrap());
    assert!(
        findings
            .iter()
            .any(|f| f.level == Level::Error && f.message.contains("option /count has no default")),
        "{findings:?}"
    );
    // ...and that the templates then fail with the defaults.
    assert!(
        findings.iter().any(|f| f.file == "jobs/server.toml.j2"),
        "{findings:?}"
    );
}

#[test]
fn lint_compares_tests_with_their_expected_jobs_and_shows_a_diff() {
    let p = package(JOB);
    let want = p
        .render("web", &json!({"count": 4}))
        .unwrap()
        .remove(0)
        .toml;
    let mut f = files(JOB);
    f.insert("tests/four.json".into(), br#"{"count": 4}"#.to_vec());
    f.insert(
        "tests/four.expected/server.toml".into(),
        want.clone().into_bytes(),
    );
    assert_eq!(lint(&Package::from_files(f.clone()).unwrap()), vec![]);
    f.insert(
        "tests/four.expected/server.toml".into(),
        want.replace("count = 4", "count = 5").into_bytes(),
    );
    let findings = lint(&Package::from_files(f).unwrap());
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].message.contains("-count = 5") && findings[0].message.contains("+count = 4"),
        "{}",
        findings[0]
    );
}

#[test]
fn digest_depends_on_contents_only() {
    let a = package(JOB);
    let b =
        Package::from_files(archive::unpack_tar_gz(&archive::pack_tar_gz(&files(JOB))).unwrap())
            .unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_ne!(a.digest(), package(&JOB.replace("echo", "true")).digest());
}

#[test]
fn every_builtin_package_passes_lint_and_renders_with_defaults() {
    let all = library::all();
    assert!(all.iter().any(|(n, _)| *n == "redis"));
    for (name, p) in all {
        let p = p.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.manifest().name, name);
        // A required option with no default (a password) is the one
        // warning a built-in package may carry; it then renders with its
        // tests/defaults.json, which gives it.
        let (_, required) = p.options_schema().without_default();
        let findings: Vec<_> = lint(&p)
            .into_iter()
            .filter(|f| {
                !(f.level == Level::Warning && f.message.contains("is required with no default"))
            })
            .collect();
        assert!(
            findings.is_empty(),
            "{name}:\n{}",
            findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let options = if required.is_empty() {
            json!({})
        } else {
            let given = p
                .files()
                .get("tests/defaults.json")
                .unwrap_or_else(|| panic!("{name}: required options and no tests/defaults.json"));
            serde_json::from_slice(given).unwrap()
        };
        let jobs = p
            .render(name, &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!jobs.is_empty());
    }
}

#[test]
fn redis_renders_a_primary_and_replicas_that_find_it() {
    let p = library::get("redis").unwrap().unwrap();
    let jobs = p.render("r1", &json!({"replicas": 3})).unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j.spec.name.as_str()).collect();
    assert_eq!(names, vec!["r1/primary", "r1/replicas"]);
    assert_eq!(jobs[1].spec.count, Some(3));
    assert_eq!(
        jobs[1].spec.task.env["REDIS_PRIMARY_SRV"],
        "_redis._tcp.primary.r1.service.shoal"
    );
}

#[test]
fn spark_workers_wait_for_the_master_and_get_the_distribution_as_an_artifact() {
    let p = library::get("spark").unwrap().unwrap();
    let hex = "ea27adc39ddac9413b8951e45aa748cbed6c785971b81386efc41938f6243d93";
    let source = format!("shoal:sha256:{hex}");
    let jobs = p
        .render("s1", &json!({"distribution": source, "workers": 3}))
        .unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j.spec.name.as_str()).collect();
    assert_eq!(names, vec!["s1/master", "s1/workers"]);
    assert_eq!(jobs[1].spec.count, Some(3));
    assert_eq!(jobs[1].spec.after, vec!["s1/master".to_owned()]);
    assert_eq!(
        jobs[1].spec.task.env["SPARK_MASTER_SRV"],
        "_spark._tcp.master.s1.service.shoal"
    );
    for job in &jobs {
        let a = &job.spec.task.artifacts;
        assert_eq!(a.len(), 1, "{}", job.spec.name);
        assert_eq!(a[0].source, source);
        assert_eq!(a[0].sha256, hex);
        assert!(a[0].extract);
    }
}

#[test]
fn spark_without_a_distribution_renders_but_says_what_to_do() {
    let p = library::get("spark").unwrap().unwrap();
    let jobs = p.render("s1", &json!({})).unwrap();
    assert!(jobs.iter().all(|j| j.spec.task.artifacts.is_empty()));
    let notes = p.notes("s1", &json!({}), false).unwrap().unwrap();
    assert!(notes.contains("no Spark distribution"), "{notes}");
    assert!(notes.contains("shoal artifact put"), "{notes}");
    let notes = p
        .notes(
            "s1",
            &json!({"distribution": "file:///srv/spark.tgz"}),
            false,
        )
        .unwrap()
        .unwrap();
    assert!(!notes.contains("WARNING"), "{notes}");
}

#[test]
fn an_upgrade_is_refused_from_a_version_outside_upgrades_from_or_newer() {
    let any = Manifest::from_toml(MANIFEST).unwrap();
    assert!(any.check_upgrade_from("1.0.0").is_ok());
    assert!(
        any.check_upgrade_from("1.2.0").is_ok(),
        "same version: options only"
    );
    let e = any.check_upgrade_from("2.0.0").unwrap_err();
    assert!(
        e.contains("web 1.2.0 cannot upgrade an installation of 2.0.0") && e.contains("rollback"),
        "{e}"
    );
    let narrow = Manifest::from_toml(
        &format!("{MANIFEST}\nupgrades_from = \">=1.1, <1.2\"\n").replace(
            "[notes]\ninstall = \"{{ instance }} runs {{ options.count }} servers\"\n",
            "",
        ),
    )
    .unwrap();
    assert!(narrow.check_upgrade_from("1.1.5").is_ok());
    let e = narrow.check_upgrade_from("1.0.0").unwrap_err();
    assert!(
        e.contains(">=1.1, <1.2") && e.contains("upgrades_from"),
        "{e}"
    );
}

#[test]
fn config_files_are_rendered_and_reach_the_job_through_task_files() {
    let job = r#"name = {{ instance ~ "/server" }}
[task]
command = "/bin/cat"
args = ["app.conf"]
[[task.files]]
path = "app.conf"
content = {{ files["app.conf"] }}
[[task.files]]
path = "static/motd"
content = {{ files["motd"] }}
"#;
    let mut f = files(job);
    f.insert(
        "files/app.conf.j2".into(),
        b"# {{ instance }}\ncount = {{ options.count }}\ngreeting = \"{{ options.greeting }}\"\n"
            .to_vec(),
    );
    f.insert("files/motd".into(), b"as is: {{ not rendered }}\n".to_vec());
    f.insert("files/logo.png".into(), vec![0x89, 0x50, 0xff, 0xfe]);
    let p = Package::from_files(f).unwrap();
    let jobs = p.render("w1", &json!({"count": 3})).unwrap();
    let task = &jobs[0].spec.task;
    assert_eq!(task.files[0].path, "app.conf");
    assert_eq!(
        task.files[0].content,
        "# w1\ncount = 3\ngreeting = \"hello\"\n"
    );
    assert_eq!(task.files[1].content, "as is: {{ not rendered }}\n");

    // A config template's undefined variable is refused naming the file.
    let mut f = files(job);
    f.insert("files/app.conf.j2".into(), b"{{ options.nope }}".to_vec());
    f.insert("files/motd".into(), b"x".to_vec());
    let e = Package::from_files(f)
        .unwrap()
        .render("w1", &json!({}))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("files/app.conf.j2") && e.contains("undefined"),
        "{e}"
    );
}
