//! The loader's levels together, in process: real files in a temporary
//! folder, a real runtime (no plugin is compiled: these manifests have no
//! step that gets that far).

use super::api::compile_route;
use super::*;
use crate::manifest::RouteSpec;
use crate::policy::host::consumers::key_digest_hex;
use crate::policy::{EngineLimits, Runtime};
use crate::route::RouteMatch;
use sha2::Digest as _;

fn runtime() -> Runtime {
    Runtime::new(
        EngineLimits { max_instances: 4 },
        None,
        Arc::new(crate::policy::host::Services::for_check()),
    )
    .unwrap()
}

/// A folder with a gateway file naming `policies` (TOML array items) and
/// `[plugins] dirs = ["plugins"]`.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(policies: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("apis")).unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        let case = Case { dir };
        case.write(
            "tollgate.toml",
            &format!(
                "schema = 1\npolicies = [{policies}]\n[[listener]]\nname = \"main\"\naddress = \"127.0.0.1:8080\"\n[plugins]\ndirs = [\"plugins\"]\n"
            ),
        );
        case
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn gw_path(&self) -> PathBuf {
        self.path("tollgate.toml")
    }

    /// Build with `overrides`, recording into a fresh [`Inputs`].
    fn build(
        &self,
        overrides: &BTreeMap<PathBuf, String>,
    ) -> (Result<Generation, ConfigErrors>, Inputs) {
        let mut inputs = Inputs::default();
        let gw = read_gateway_file_recording(&self.gw_path(), &mut inputs).unwrap();
        let built = build_recording(&self.gw_path(), &gw, &runtime(), overrides, &mut inputs);
        (built, inputs)
    }

    fn errors(&self) -> Vec<String> {
        self.build(&BTreeMap::new()).0.unwrap_err().0
    }
}

/// `file:line:1` of the line of `text` (the file `file`) where `needle` is.
fn line_of(file: &Path, text: &str, needle: &str) -> String {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle:?}"));
    let line = text[..offset].matches('\n').count() + 1;
    format!("{}:{line}:1", file.display())
}

fn route(g: &Generation, host: &str, path: &str, method: &str) -> Option<(usize, String)> {
    match g.router.route(host, path, method) {
        RouteMatch::Found { route, .. } => Some((route.api, route.name.clone())),
        _ => None,
    }
}

const PETS: &str = r#"schema = 1

[[consumer]]
id = "acme"
plan = "gold"
apis = ["pets"]
keys = [{ id = "k1", sha256 = "KEY", expires = 2999-01-01T00:00:00Z }]

[[api]]
name = "pets"
upstream = { targets = ["http://127.0.0.1:9"] }

[[api.route]]
prefix = "/pets/"

[[api.route]]
path = "/pets/{id}"
methods = ["get"]

[[api]]
name = "stores"
upstream = { targets = ["http://127.0.0.1:9"] }

[[api.route]]
name = "shop"
hosts = ["shop.example"]
path = "/stores"
"#;

#[test]
fn builds_a_generation_from_a_manifest_without_steps() {
    let case = Case::new("\"apis\"");
    let text = PETS.replace("KEY", &key_digest_hex("s3cret"));
    let file = case.write("apis/pets.toml", &text);
    case.write("apis/notes.txt", "not a manifest");
    let (built, inputs) = case.build(&BTreeMap::new());
    let g = built.unwrap();

    let names: Vec<&str> = g.apis.iter().map(|a| &*a.name).collect();
    assert_eq!(names, ["pets", "stores"]);
    assert_eq!(g.apis[0].manifest, file);
    assert!(g
        .apis
        .iter()
        .all(|a| a.steps.is_empty() && a.request_body_limit.is_none()));
    assert!(g.snapshotted(), "no step to snapshot");

    assert_eq!(
        route(&g, "any", "/pets/7", "GET"),
        Some((0, "/pets/{id}".into()))
    );
    assert_eq!(
        route(&g, "any", "/pets/7", "POST"),
        Some((0, "/pets/**".into()))
    );
    assert_eq!(
        route(&g, "shop.example", "/stores", "GET"),
        Some((1, "shop".into()))
    );
    assert_eq!(route(&g, "other.example", "/stores", "GET"), None);

    let key = g
        .consumers
        .lookup_key("pets", "s3cret", crate::domain::time::Ts(0))
        .unwrap();
    assert_eq!(
        (key.id.as_str(), key.key_id.as_deref()),
        ("acme", Some("k1"))
    );
    assert_eq!(key.plan.as_deref(), Some("gold"));
    assert!(g
        .consumers
        .lookup_key("stores", "s3cret", crate::domain::time::Ts(0))
        .is_none());
    assert!(
        g.consumers
            .lookup_key(
                "pets",
                "s3cret",
                crate::domain::time::Ts(32_503_680_000_000)
            )
            .is_none(),
        "expired in 2999"
    );

    assert_eq!(g.watched, vec![case.path("apis"), case.gw_path()]);
    let sha = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    assert_eq!(g.sources, BTreeMap::from([(file.clone(), sha)]));

    // What the build read: the gateway file, the manifest, the folder.
    assert!(inputs.relevant(&case.gw_path()) && inputs.relevant(&file));
    assert!(inputs.relevant(&case.path("apis/new.toml")));
    assert!(!inputs.relevant(&case.path("apis/notes.txt")));
    assert!(inputs.unchanged());
    case.write("apis/new.toml", "schema = 1\n");
    assert!(!inputs.unchanged(), "a manifest added to the folder");
}

#[test]
fn every_manifest_error_in_the_order_of_the_files_then_of_their_contents() {
    let case = Case::new("\"apis\", \"missing.toml\"");
    let a = r#"schema = 1

[[consumer]]
id = "acme"
keys = [{ id = "k1", sha256 = "abc" }, { id = "k2", sha256 = "KEY", expires = 1969-12-31T23:59:59Z }]

[[consumer]]
id = "acme"

[[api]]
name = "pets"
upstream = { targets = ["ftp://127.0.0.1:21"] }

[[api.route]]
path = "/pets"
prefix = "/pets"

[[api.route]]
path = "/pets/{id"

[[api]]
name = "empty"
upstream = { targets = ["http://127.0.0.1:9"] }
"#
    .replace("KEY", &key_digest_hex("k"));
    let b = r#"schema = 1

[[api]]
name = "pets"
upstream = { targets = ["http://127.0.0.1:9"] }

[[api.route]]
path = "/b"
methods = ["GE T"]
"#;
    let fa = case.write("apis/a.toml", &a);
    let fb = case.write("apis/b.toml", b);
    let fc = case.write("apis/c.toml", "schema = 7\n");
    let fd = case.write("apis/d.toml", "schema = 1\n[[api]\n");
    let errs = case.errors();

    let consumer = line_of(&fa, &a, "[[consumer]]");
    let second_consumer = line_of(&fa, &a, "[[consumer]]\nid = \"acme\"\n\n");
    let pets = line_of(&fa, &a, "[[api]]\nname = \"pets\"");
    let expected = [
        format!("{consumer}: consumer `acme`: key `k1`: `sha256` must be 64 hex digits (see `tollgate hash-key`)"),
        format!("{consumer}: consumer `acme`, key `k2`: expires `1969-12-31T23:59:59Z` must be a full date-time with offset, e.g. 2027-01-01T00:00:00Z"),
        format!("{second_consumer}: consumer `acme` is defined twice"),
        format!("{pets}: api `pets`: upstream: target `ftp://127.0.0.1:21` must start with http:// or https://"),
        format!("{}: api `pets`: route: give either `path` or `prefix`, not both", line_of(&fa, &a, "[[api.route]]\npath = \"/pets\"\n")),
        format!("{}: api `pets`: route: path `/pets/{{id`: segment `{{id` has an unclosed `{{`", line_of(&fa, &a, "[[api.route]]\npath = \"/pets/{id\"")),
        format!("{}: api `empty` has no route: add an [[api.route]] with `path` or `prefix`, or `openapi = FILE`", line_of(&fa, &a, "[[api]]\nname = \"empty\"")),
        format!("{}: api `pets` is already defined at {pets}", line_of(&fb, b, "[[api]]")),
        format!("{}: schema 7 is not supported (this build reads schema 1)", fc.display()),
    ];
    assert_eq!(errs[..expected.len()], expected, "{errs:#?}");
    let rest = &errs[expected.len()..];
    assert_eq!(rest.len(), 2, "{rest:#?}");
    assert!(
        rest[0].starts_with(&format!("{}: TOML parse error at line 2", fd.display())),
        "{rest:#?}"
    );
    assert!(
        rest[1].starts_with(&format!(
            "{}: cannot read: ",
            case.path("missing.toml").display()
        )),
        "{rest:#?}"
    );
}

#[test]
fn an_api_whose_name_is_taken_keeps_the_first_definition_even_when_that_failed() {
    let case = Case::new("\"apis/a.toml\", \"apis/b.toml\"");
    let a =
        "schema = 1\n[[api]]\nname = \"pets\"\nupstream = { targets = [\"http://127.0.0.1:9\"] }\n";
    let fa = case.write("apis/a.toml", a);
    let fb = case.write("apis/b.toml", a);
    assert_eq!(
        case.errors(),
        [
            format!(
                "{}:2:1: api `pets` has no route: add an [[api.route]] with `path` or `prefix`, or `openapi = FILE`",
                fa.display()
            ),
            format!(
                "{}:2:1: api `pets` is already defined at {}:2:1",
                fb.display(),
                fa.display()
            ),
        ]
    );
}

#[test]
fn steps_report_duplicate_names_and_missing_plugins_and_record_where_plugins_were_looked_for() {
    let case = Case::new("\"apis/pets.toml\"");
    let text = r#"schema = 1
[[api]]
name = "pets"
upstream = { targets = ["http://127.0.0.1:9"] }
[[api.route]]
prefix = "/"
[[api.chain]]
plugin = "auth"
[[api.chain]]
name = "auth"
plugin = "auth2"
[[api.chain]]
plugin = "bad.wasm"
[[api.chain]]
name = "junk-step"
plugin = "junk"
"#;
    let file = case.write("apis/pets.toml", text);
    let junk = case.write("plugins/junk.wasm", "not wasm");
    let (built, inputs) = case.build(&BTreeMap::new());
    let errs = built.unwrap_err().0;
    let at = |needle: &str| line_of(&file, text, needle);
    assert_eq!(
        errs,
        [
            format!(
                "{}: api `pets`, step `auth` (plugin `auth`): plugin `auth` not found: no [plugins.paths] entry `auth` and no `auth.wasm` in {}",
                at("plugin = \"auth\""),
                case.path("plugins").display()
            ),
            format!(
                "{}: api `pets`: step name `auth` is used twice; give each step a distinct `name`",
                at("[[api.chain]]\nname = \"auth\"")
            ),
            format!(
                "{}: api `pets`, step `bad.wasm` (plugin `bad.wasm`): plugin name `bad.wasm` may contain only letters, digits, `-` and `_`: write `bad`, or map it in [plugins.paths]",
                at("plugin = \"bad.wasm\"")
            ),
            format!(
                "{}: api `pets`, step `junk-step` (plugin `junk`): plugin `junk` ({}) is not WebAssembly (the file does not start with `\\0asm`)",
                at("[[api.chain]]\nname = \"junk-step\""),
                junk.display()
            ),
        ]
    );
    // Where `auth` was looked for, and the plugin that was read.
    assert!(inputs.relevant(&case.path("plugins/auth.wasm")));
    assert!(inputs.relevant(&junk));
    assert!(inputs.unchanged());
    case.write("plugins/auth.wasm", "\0asm");
    assert!(!inputs.unchanged(), "the missing plugin appeared");
}

#[test]
fn an_edit_is_built_in_place_of_the_file_on_disk() {
    let case = Case::new("\"apis\"");
    let old = "schema = 1\n";
    let file = case.write("apis/pets.toml", old);
    let new = PETS.replace("KEY", &key_digest_hex("s3cret"));
    let overrides = BTreeMap::from([(file.clone(), new.clone())]);
    let (built, inputs) = case.build(&overrides);
    let g = built.unwrap();
    assert_eq!(g.apis.len(), 2, "the edited text was built");
    assert_eq!(
        g.sources[&file],
        hex::encode(sha2::Sha256::digest(new.as_bytes()))
    );
    assert!(!inputs.unchanged(), "the disk does not hold the edit yet");
    case.write("apis/pets.toml", &new);
    assert!(
        inputs.unchanged(),
        "once written, the file is what was built"
    );

    let broken = BTreeMap::from([(file.clone(), "schema = 1\n[[api]\n".to_string())]);
    let (built, inputs) = case.build(&broken);
    let errs = built.unwrap_err().0;
    assert!(
        errs[0].starts_with(&format!("{}: TOML parse error", file.display())),
        "{errs:?}"
    );
    assert!(!inputs.unchanged(), "an edit that does not parse is unread");
}

#[test]
fn a_policy_path_that_is_not_a_folder_is_read_as_a_manifest() {
    let case = Case::new("\"apis\"");
    let gw = read_gateway_file(&case.gw_path()).unwrap();
    std::fs::remove_dir(case.path("apis")).unwrap();
    // Not a folder any more: read as a manifest file.
    assert_eq!(
        manifest_files(case.dir.path(), &gw).unwrap(),
        vec![case.path("apis")]
    );
    let errs = case.errors();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with(&format!("{}: cannot read: ", case.path("apis").display())));
}

fn route_spec(toml: &str) -> RouteSpec {
    toml::from_str(toml).unwrap()
}

#[test]
fn routes_compile_from_a_path_or_a_prefix() {
    let r = compile_route(
        3,
        5,
        &route_spec("path = \"/pets/{id}\"\nmethods = [\"get\", \"Post\"]"),
    )
    .unwrap();
    assert_eq!((r.api, r.order, r.name.as_str()), (3, 5, "/pets/{id}"));
    assert_eq!(r.methods, ["GET", "POST"]);
    assert_eq!(
        r.path.matches("/pets/7"),
        Some(vec![("id".into(), "7".into())])
    );
    let r = compile_route(0, 0, &route_spec("prefix = \"/pets/\"")).unwrap();
    assert_eq!(r.name, "/pets/**");
    assert!(r.methods.is_empty() && r.hosts.is_empty());
    let r = compile_route(
        0,
        0,
        &route_spec("name = \"all\"\nprefix = \"/\"\nhosts = [\"*.example\"]"),
    )
    .unwrap();
    assert_eq!((r.name.as_str(), r.hosts.len()), ("all", 1));
}

#[test]
fn route_errors_say_what_to_write() {
    let err = |t: &str| compile_route(0, 0, &route_spec(t)).unwrap_err();
    assert_eq!(
        err("path = \"/a\"\nprefix = \"/a\""),
        "give either `path` or `prefix`, not both"
    );
    assert_eq!(
        err("methods = [\"GET\"]"),
        "give `path` (e.g. \"/pets/{id}\") or `prefix`"
    );
    assert_eq!(
        err("path = \"/a\"\nmethods = [\"\"]"),
        "method `` is not an HTTP method"
    );
    assert_eq!(
        err("path = \"/a\"\nmethods = [\"GE T\"]"),
        "method `GE T` is not an HTTP method"
    );
    assert_eq!(
        err("path = \"/pets/{id\""),
        "path `/pets/{id`: segment `{id` has an unclosed `{`"
    );
    assert!(!err("path = \"/a\"\nhosts = [\"a b\"]").is_empty());
}

/// An API `name` with one route `path`, and `extra` keys.
fn api(name: &str, path: &str, extra: &str) -> String {
    format!(
        "\n[[api]]\nname = \"{name}\"\nupstream = {{ targets = [\"http://127.0.0.1:9\"] }}\n{extra}\n[[api.route]]\npath = \"{path}\"\n"
    )
}

fn versioned(scheme: &str, default: &str) -> String {
    let mut t =
        format!("schema = 1\n[[version-set]]\nname = \"pets\"\nscheme = \"{scheme}\"\n{default}\n");
    t += &api(
        "pets-v1",
        "/pets/{id}",
        "version-set = \"pets\"\nversion = \"v1\"\nlifecycle = { state = \"deprecated\", deprecated-at = 2026-06-01T00:00:00Z, sunset = 2027-01-01T00:00:00Z, successor = \"pets-v2\" }",
    );
    t += &api(
        "pets-v2",
        "/pets/{id}",
        "version-set = \"pets\"\nversion = \"v2\"",
    );
    t += &api("other", "/other", "");
    t
}

fn versioned_route<'g>(
    g: &'g Generation,
    path: &str,
    named: Option<&'g str>,
) -> Result<(&'g str, bool), String> {
    match g.router.route_versioned("h", path, "GET", &|_| named) {
        RouteMatch::Found { route, .. } => Ok((
            &g.apis[route.api].name,
            route.version.as_ref().is_some_and(|v| v.strip),
        )),
        RouteMatch::UnknownVersion { set, given } => Err(format!("unknown {} {given:?}", set.name)),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn path_versions_route_under_their_segment_and_the_default_also_without() {
    let case = Case::new("\"apis\"");
    case.write("apis/pets.toml", &versioned("path", "default = \"v2\""));
    let g = case.build(&BTreeMap::new()).0.unwrap();
    assert_eq!(
        versioned_route(&g, "/v1/pets/1", None),
        Ok(("pets-v1", true))
    );
    assert_eq!(
        versioned_route(&g, "/v2/pets/1", None),
        Ok(("pets-v2", true))
    );
    assert_eq!(versioned_route(&g, "/pets/1", None), Ok(("pets-v2", false)));
    assert_eq!(versioned_route(&g, "/other", None), Ok(("other", false)));
    assert_eq!(
        versioned_route(&g, "/v9/pets/1", None),
        Err("unknown pets Some(\"v9\")".into())
    );
    let v1 = g.apis.iter().find(|a| &*a.name == "pets-v1").unwrap();
    let life = v1.lifecycle.as_deref().unwrap();
    assert_eq!(life.deprecated_at, Some(1_780_272_000));
    assert_eq!(life.sunset, Some(1_798_761_600));
    assert_eq!(life.successor.as_ref().unwrap().version.as_ref(), "v2");
    assert_eq!(v1.version.as_ref().unwrap().set.as_ref(), "pets");
    // Without a default, no version is an unknown one.
    case.write("apis/pets.toml", &versioned("path", ""));
    let g = case.build(&BTreeMap::new()).0.unwrap();
    assert_eq!(
        versioned_route(&g, "/pets/1", None),
        Err("unknown pets None".into())
    );
}

#[test]
fn header_and_query_versions_share_their_paths() {
    let case = Case::new("\"apis\"");
    case.write(
        "apis/pets.toml",
        &versioned("header", "header = \"x-version\"\ndefault = \"v1\""),
    );
    let g = case.build(&BTreeMap::new()).0.unwrap();
    assert_eq!(
        g.router.sets()[0].from,
        crate::route::VersionFrom::Header("x-version".into())
    );
    assert_eq!(
        versioned_route(&g, "/pets/1", Some("v2")),
        Ok(("pets-v2", false))
    );
    assert_eq!(versioned_route(&g, "/pets/1", None), Ok(("pets-v1", false)));
    assert_eq!(
        versioned_route(&g, "/pets/1", Some("v3")),
        Err("unknown pets Some(\"v3\")".into())
    );
    case.write("apis/pets.toml", &versioned("query", ""));
    let g = case.build(&BTreeMap::new()).0.unwrap();
    assert_eq!(
        g.router.sets()[0].from,
        crate::route::VersionFrom::Query("api-version".into())
    );
    assert_eq!(
        versioned_route(&g, "/pets/1", None),
        Err("unknown pets None".into())
    );
}

#[test]
fn version_errors_name_the_file_line_and_what_is_wrong() {
    let case = Case::new("\"apis\"");
    let cases: &[(&str, &str)] = &[
        (
            "schema = 1\n[[api]]\nname = \"a\"\nversion-set = \"nope\"\nversion = \"v1\"\nupstream = { targets = [\"http://127.0.0.1:9\"] }\n[[api.route]]\npath = \"/a\"\n",
            "a.toml:2:1: api `a`: version-set `nope` is not defined (none is defined)",
        ),
        (
            &(versioned("path", "") + &api("dup", "/dup", "version-set = \"pets\"\nversion = \"v1\"")),
            "api `dup`: version `v1` of version-set `pets` is already api `pets-v1`",
        ),
        (
            &versioned("path", "default = \"v3\""),
            "version-set `pets`: default `v3` is not one of its versions (defined: v1, v2)",
        ),
        (
            &versioned("path", "").replace("\"deprecated\", deprecated-at = 2026-06-01T00:00:00Z,", "\"deprecated\","),
            "api `pets-v1`: lifecycle: a deprecated API needs `deprecated-at`",
        ),
        (
            &versioned("path", "").replace("successor = \"pets-v2\"", "successor = \"other\""),
            "api `pets-v1`: lifecycle: successor `other` is not a version of the same version-set",
        ),
        (
            &(versioned("header", "") + &api("plain", "/pets/{name}", "")),
            "route `/pets/{}` answers the same calls as api `plain` route `/pets/{}`",
        ),
        (
            &(versioned("path", "") + &api("shadow", "/v1/x", "")),
            "api `shadow`: route `/v1/x` starts with `/v1`, a version of version-set `pets`",
        ),
        (
            &(String::from("schema = 1\n") + &api("dot", "/.rev/x", "")),
            "api `dot`: route: paths under `/.rev/` are the addresses of revisions",
        ),
        (
            &versioned("header", "query = \"v\""),
            "version-set `pets`: `query` does not go with scheme = \"header\"",
        ),
        (
            &api("r", "/r", "[[api.revision]]\nnumber = 1\nupstream = { targets = [\"http://127.0.0.1:9\"] }\n[[api.revision.route]]\npath = \"/r\"\n").replace("\n[[api]]", "schema = 1\n[[api]]"),
            "api `r`: revision 1 is the API's current revision (current-revision)",
        ),
    ];
    for (text, want) in cases {
        std::fs::remove_dir_all(case.path("apis")).unwrap();
        std::fs::create_dir(case.path("apis")).unwrap();
        case.write("apis/a.toml", text);
        let errs = case.errors();
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "want {want:?} in {errs:#?}\n{text}"
        );
    }
}

#[test]
fn revisions_build_with_their_own_routes_and_chain() {
    let case = Case::new("\"apis\"");
    let text = "schema = 1\n[[api]]\nname = \"r\"\ncurrent-revision = 2\nprevious-revision = 1\nupstream = { targets = [\"http://127.0.0.1:9\"] }\n[[api.route]]\npath = \"/r\"\n[[api.revision]]\nnumber = 1\ndescription = \"first\"\nupstream = { targets = [\"http://127.0.0.1:9/old\"] }\n[[api.revision.route]]\nprefix = \"/old\"\n";
    case.write("apis/r.toml", text);
    let g = case.build(&BTreeMap::new()).0.unwrap();
    assert_eq!(g.apis[0].revision, 2);
    let rev = &g.revisions[&("r".to_string(), 1)];
    assert_eq!(rev.description.as_deref(), Some("first"));
    assert_eq!(rev.api.revision, 1);
    assert!(matches!(
        rev.router.route("h", "/old/x", "GET"),
        RouteMatch::Found { .. }
    ));
    case.write(
        "apis/r.toml",
        &text.replace("previous-revision = 1", "previous-revision = 7"),
    );
    let errs = case.errors();
    assert!(
        errs[0].ends_with("api `r`: previous-revision 7 is not one of its revisions"),
        "{errs:?}"
    );
}

#[test]
fn a_revision_takes_its_routes_from_its_openapi_document_too() {
    let case = Case::new("\"apis\"");
    case.write(
        "apis/pets.json",
        r#"{"openapi": "3.1.0", "info": {"title": "pets", "version": "2"},
            "paths": {"/pets/{id}": {"get": {"operationId": "getPet", "responses": {"200": {"description": "a pet"}}}}}}"#,
    );
    let text = "schema = 1\n[[api]]\nname = \"r\"\nupstream = { targets = [\"http://127.0.0.1:9\"] }\n[[api.route]]\npath = \"/r\"\n[[api.revision]]\nnumber = 2\nopenapi = \"pets.json\"\nupstream = { targets = [\"http://127.0.0.1:9\"] }\n";
    case.write("apis/r.toml", text);
    let g = case
        .build(&BTreeMap::new())
        .0
        .unwrap_or_else(|e| panic!("{e}"));
    let rev = &g.revisions[&("r".to_string(), 2)];
    assert!(rev.api.openapi.is_some());
    assert!(matches!(
        rev.router.route("h", "/pets/1", "GET"),
        RouteMatch::Found { .. }
    ));
    assert!(!matches!(
        rev.router.route("h", "/r", "GET"),
        RouteMatch::Found { .. }
    ));
}

#[test]
fn websocket_errors_name_the_route_and_the_bound() {
    let case = Case::new("\"apis\"");
    let cases: &[(&str, &str)] = &[
        (
            "[api.websocket]\nroutes = [\"chat\"]",
            "api `ws`: websocket: routes: no route `chat` in this API (its routes: `/ws`)",
        ),
        (
            "[api.websocket]\nidle-timeout = \"0s\"",
            "api `ws`: websocket: idle-timeout: must be more than 0",
        ),
        (
            "[api.websocket]\nmax-message = \"100B\"",
            "api `ws`: websocket: max-message: 100 bytes; must be from 125 bytes (a control frame) to 64MiB",
        ),
        (
            "[api.websocket]\nmax-message = \"65MiB\"",
            "must be from 125 bytes (a control frame) to 64MiB",
        ),
        ("[api.websocket]\nidle = \"1s\"", "unknown field `idle`"),
    ];
    for (extra, want) in cases {
        std::fs::remove_dir_all(case.path("apis")).unwrap();
        std::fs::create_dir(case.path("apis")).unwrap();
        case.write(
            "apis/a.toml",
            &format!("schema = 1\n{}", api("ws", "/ws", extra)),
        );
        let errs = case.errors();
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "want {want:?} in {errs:#?}"
        );
    }
    // An h2c upstream cannot take a handshake; h2c is for http:// only.
    case.write(
        "apis/a.toml",
        &format!("schema = 1\n{}", api("ws", "/ws", "[api.websocket]"))
            .replace("] }", "], protocol = \"h2c\" }"),
    );
    let errs = case.errors();
    assert!(
        errs.iter()
            .any(|e| e.contains("websocket: the upstream's protocol is h2c")),
        "{errs:#?}"
    );
    case.write(
        "apis/a.toml",
        &format!("schema = 1\n{}", api("tls", "/t", "")).replace(
            "http://127.0.0.1:9\"] }",
            "https://127.0.0.1:9\"], protocol = \"h2c\" }",
        ),
    );
    let errs = case.errors();
    assert!(
        errs.iter()
            .any(|e| e.contains("is HTTP/2 without TLS, for http:// targets")),
        "{errs:#?}"
    );
    // Valid: a route by name, the bounds at their limits.
    case.write(
        "apis/a.toml",
        &format!(
            "schema = 1\n{}",
            api(
                "ws",
                "/ws",
                "[api.websocket]\nroutes = [\"/ws\"]\nmax-message = \"125B\"\nidle-timeout = \"1ms\""
            )
        ),
    );
    let (built, _) = case.build(&BTreeMap::new());
    let g = built.unwrap();
    let ws = g.apis[0].spec.websocket.as_ref().unwrap();
    assert_eq!(ws.routes, ["/ws"]);
    assert_eq!(ws.max_lifetime.0, std::time::Duration::from_secs(3600));
}

#[test]
fn scope_errors_name_the_file_line_and_scope_and_are_reported_once() {
    let case = Case::new("\"apis\"");
    let global = r#"schema = 1
[[chain]]
plugin = "absent-global"
[[chain]]
base = true
[[product]]
id = "gold"
[[product.chain]]
base = true
"#;
    let apis = r#"schema = 1
[[chain]]
plugin = "second-gateway-chain"
[[product]]
id = "gold"
[[api]]
name = "a"
upstream = { targets = ["http://127.0.0.1:9"] }
[[api.route]]
name = "r"
prefix = "/a"
[[api.route.chain]]
base = true
[[api.route.chain]]
base = true
[[api.chain]]
name = "absent-global"
plugin = "x"
[[api.chain]]
base = true
plugin = "y"
[[api.chain]]
name = "nothing"
[[api]]
name = "b"
upstream = { targets = ["http://127.0.0.1:9"] }
[[api.route]]
prefix = "/b"
"#;
    let g = case.write("apis/0-global.toml", global);
    let f = case.write("apis/1-apis.toml", apis);
    let errs = case.errors();
    let at = |file: &Path, text: &str, needle: &str| line_of(file, text, needle);
    let want = [
        format!(
            "{}: the gateway chain is already declared in {}: declare it in one manifest",
            at(&f, apis, "[[chain]]"),
            g.display()
        ),
        format!(
            "{}: product `gold` has a chain already, in {}: declare it once",
            at(&f, apis, "[[product]]"),
            g.display()
        ),
        // The gateway chain's errors: once, though two APIs are built.
        format!(
            "{}: the gateway chain, step `absent-global` (plugin `absent-global`): plugin `absent-global` not found: no [plugins.paths] entry `absent-global` and no `absent_global.wasm` in {}",
            at(&g, global, "plugin = \"absent-global\""),
            case.path("plugins").display()
        ),
        format!(
            "{}: the gateway chain: the gateway chain encloses every other: it has no `base` step",
            at(&g, global, "[[chain]]\nbase = true"),
        ),
    ];
    for w in &want {
        assert!(errs.contains(w), "missing\n{w}\nin\n{errs:#?}");
    }
    let has = |needle: &str| errs.iter().filter(|e| e.contains(needle)).count();
    assert_eq!(
        has("not found: no [plugins.paths] entry `absent-global`"),
        1,
        "{errs:#?}"
    );
    assert_eq!(has("product `gold`: a product's chain runs right after the step that identified the caller: it has no `base` step"), 1, "{errs:#?}");
    assert_eq!(
        has("api `a`, route `r`: a second `base` step (the first is step 1)"),
        1,
        "{errs:#?}"
    );
    assert_eq!(
        has("api `a`: step name `absent-global` is used twice (by the gateway chain and the API's chain of api `a`)"),
        1,
        "{errs:#?}"
    );
    assert_eq!(
        has("api `a`: a `base` step marks where the enclosing chain runs: give it no other key"),
        1,
        "{errs:#?}"
    );
    assert_eq!(
        has("step `nothing` (plugin ``): a step needs `plugin`"),
        1,
        "{errs:#?}"
    );
}
