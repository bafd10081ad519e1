use super::*;

fn load_text(text: &str) -> Result<OpenApi, Vec<String>> {
    from_text(Path::new("spec.yaml"), text)
}

fn errors(text: &str) -> String {
    load_text(text).unwrap_err().join("\n")
}

const HEAD: &str = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\n";

#[test]
fn operations_in_document_order_named_by_operation_id() {
    let s = load_text(&format!(
        "{HEAD}paths:\n  /pets:\n    get: {{operationId: listPets, tags: [pets]}}\n    post: {{}}\n  /pets/{{petId}}:\n    parameters: []\n    delete: {{operationId: 'delete pet!'}}\n"
    ))
    .unwrap();
    let ops: Vec<(&str, &str, &str, &str)> = s
        .operations
        .iter()
        .map(|o| {
            (
                o.route.as_str(),
                o.method.as_str(),
                o.path.as_str(),
                o.pointer.as_str(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("listPets", "GET", "/pets", "/paths/~1pets/get"),
            ("post-pets", "POST", "/pets", "/paths/~1pets/post"),
            (
                "delete-pet",
                "DELETE",
                "/pets/{petId}",
                "/paths/~1pets~1{petId}/delete"
            ),
        ]
    );
    assert_eq!(s.operations[0].tags, ["pets"]);
    let v = s.for_step();
    assert_eq!(v["operations"][2]["route"], "delete-pet");
    assert_eq!(v["version"], "3.1.0");
    assert_eq!(v["document"]["info"]["title"], "t");
}

#[test]
fn refs_must_be_local_and_resolve() {
    let e = errors(&format!(
        "{HEAD}paths:\n  /a:\n    get:\n      responses:\n        '200':\n          $ref: 'https://example.com/r.yaml'\n"
    ));
    assert!(
        e.starts_with("spec.yaml:8:11: at /paths/~1a/get/responses/200/$ref: `$ref: https://example.com/r.yaml` is a remote reference"),
        "{e}"
    );
    let e = errors(&format!("{HEAD}paths:\n  /a:\n    get:\n      responses:\n        '200': {{$ref: './other.yaml#/x'}}\n"));
    assert!(e.contains("a reference to another file"), "{e}");
    let e = errors(&format!(
        "{HEAD}components:\n  schemas:\n    A: {{$ref: '#/components/schemas/Nope'}}\n"
    ));
    assert!(e.contains("points at nothing"), "{e}");
    let e = errors(&format!(
        "{HEAD}components:\n  schemas:\n    A: {{$ref: '#/components/schemas/B'}}\n    B: {{$ref: '#/components/schemas/A'}}\n"
    ));
    assert!(e.contains("loop of references"), "{e}");
    // A recursive schema is fine: the reference resolves to a schema.
    load_text(&format!(
        "{HEAD}components:\n  schemas:\n    Node:\n      type: object\n      properties:\n        children: {{type: array, items: {{$ref: '#/components/schemas/Node'}}}}\n"
    ))
    .unwrap();
    // Percent-escaped pointers resolve.
    load_text(&format!(
        "{HEAD}components:\n  schemas:\n    'a b': {{type: string}}\n    C: {{$ref: '#/components/schemas/a%20b'}}\n"
    ))
    .unwrap();
}

#[test]
fn versions_and_shapes() {
    assert!(errors("swagger: '2.0'\npaths: {}\n").contains("Swagger 2.0"));
    assert!(errors("openapi: 3.2.0\n").contains("`3.2.0` is not supported"));
    assert!(errors("openapi: 3.1\n").contains("must be a string"));
    assert!(errors("- a\n").contains("mapping"));
    assert!(errors(&format!("{HEAD}paths: [1]\n")).contains("`paths` must be a mapping"));
    assert!(errors(&format!("{HEAD}paths:\n  /a:\n    get: 1\n"))
        .contains("an operation must be a mapping"));
    let e = errors(&format!(
        "{HEAD}paths:\n  /a:\n    get: {{operationId: x}}\n  /b:\n    get: {{operationId: x}}\n"
    ));
    assert!(
        e.contains("operationId `x` is also the id of /paths/~1a/get"),
        "{e}"
    );
}

#[test]
fn path_templates_must_fit_the_router() {
    let e = errors(&format!(
        "{HEAD}paths:\n  /files/{{name}}.{{ext}}:\n    get: {{}}\n"
    ));
    assert!(e.contains("one capture"), "{e}");
    assert!(e.starts_with("spec.yaml:4:3:"), "{e}");
    let e = errors(&format!("{HEAD}paths:\n  /a/{{pet.id}}:\n    get: {{}}\n"));
    assert!(e.contains("letters, digits"), "{e}");
    // One capture with literal text around it is routed.
    let s = load_text(&format!(
        "{HEAD}paths:\n  /files/{{id}}/thumbnail.{{extension}}:\n    get: {{}}\n  /Calls/{{Sid}}.json:\n    get: {{}}\n"
    ))
    .unwrap();
    assert_eq!(s.operations[0].path, "/Calls/{Sid}.json");
    let e = errors(&format!("{HEAD}paths:\n  pets:\n    get: {{}}\n"));
    assert!(e.contains("must start with `/`"), "{e}");
}

#[test]
fn ten_thousand_operations_are_refused() {
    let mut t = format!("{HEAD}paths:\n");
    for i in 0..10_000 {
        t.push_str(&format!("  /p{i}:\n    get: {{}}\n"));
    }
    let e = errors(&t);
    assert!(e.contains("more than 5000 operations"), "{e}");
}

#[test]
fn route_names_stay_unique_and_valid() {
    let long = "x".repeat(100);
    let s = load_text(&format!(
        "{HEAD}paths:\n  /a:\n    get: {{operationId: {long}1}}\n    put: {{operationId: {long}2}}\n"
    ))
    .unwrap();
    assert_eq!(s.operations[0].route.len(), 64);
    assert_eq!(s.operations[1].route, format!("{}-2", "x".repeat(62)));
}

#[test]
fn operations_the_router_cannot_tell_apart_share_a_route() {
    let s = load_text(&format!(
        "{HEAD}paths:\n  /files/{{id}}:\n    get: {{operationId: getFile}}\n  /files/{{id}}#shared:\n    get: {{operationId: getShared}}\n  /files/{{file_id}}?beta=true:\n    get: {{operationId: getBeta}}\n    put: {{operationId: putBeta}}\n"
    ))
    .unwrap();
    let v: Vec<(&str, &str, Option<&str>)> = s
        .operations
        .iter()
        .map(|o| (o.route.as_str(), o.path.as_str(), o.shadowed_by.as_deref()))
        .collect();
    // Paths in key order (`serde_json` sorts them).
    assert_eq!(
        v,
        [
            ("getBeta", "/files/{file_id}", None),
            ("putBeta", "/files/{file_id}", None),
            ("getFile", "/files/{id}", Some("getBeta")),
            ("getShared", "/files/{id}", Some("getBeta")),
        ]
    );
    assert_eq!(s.served().count(), 2);
    assert_eq!(s.for_step()["operations"].as_array().unwrap().len(), 2);
    assert_eq!(s.operations[3].pointer, "/paths/~1files~1{id}#shared/get");
}
