//! Deployment checks, offline.
//!
//! - The SAM template (`template.yaml`), read as data: the security properties
//!   `docs/deploy.md` promises (no wildcard resources on SSM and KMS actions, KMS use
//!   only via SSM and only for the owned path, a retried and dead-lettered schedule whose
//!   input carries the scheduled time, partition-aware ARNs) and the wiring SAM needs.
//! - The layer zips `make layer` builds (ignored unless `LOCKBOX_LAYER_ZIP` names them, as
//!   `make test` does): layout, mode, architecture, glibc versions, and the extension from
//!   the zip registering and serving `/ping` under the sandbox.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lockbox_tests::bins::{free_port, workspace_root};
use lockbox_tests::sandbox::Sandbox;
use lockbox_tests::{random_hex, ExtClient, INIT_TIMEOUT};
use serde_json::{json, Map, Value};

/// The highest glibc Lambda's provided.al2023 (and every Amazon Linux 2023 runtime) has.
const MAX_GLIBC: (u32, u32) = (2, 34);
/// SSM and KMS actions AWS defines without resource-level permissions: only `"*"` works.
const NO_RESOURCE_LEVEL: &[&str] = &[
    "ssm:DescribeParameters",
    "secretsmanager:BatchGetSecretValue",
    "kms:GenerateRandom",
];
/// The only statements allowed a `"*"` resource: each grants actions of
/// [`NO_RESOURCE_LEVEL`] alone, with a comment in the template saying why.
const WILDCARD_STATEMENTS: &[&str] = &[
    "RotatorRolePolicy/DescribeParametersHasNoResourceLevelPermission",
    "ConsumerRolePolicy/BatchGetSecretValueHasNoResourceLevelPermission",
];
/// KMS calls SSM makes on the rotator's behalf when it writes and reads back a
/// SecureString (Standard: Encrypt, Advanced: GenerateDataKey, read-back: Decrypt).
const KMS_VIA_SSM: &[&str] = &["kms:encrypt", "kms:generatedatakey", "kms:decrypt"];
/// KMS actions that use key material: never granted without conditions.
const KMS_CRYPTO: &[&str] = &[
    "kms:encrypt",
    "kms:decrypt",
    "kms:generatedatakey",
    "kms:generatedatakeypair",
    "kms:generatedatakeywithoutplaintext",
    "kms:reencryptfrom",
    "kms:reencryptto",
];
/// The PARAMETER_ARN every SSM-mediated KMS use must be scoped to.
const OWNED_PARAMETER_ARN: &str =
    "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${OwnedPath}*";
const SSM_VIA_SERVICE: &str = "ssm.${AWS::Region}.${AWS::URLSuffix}";
/// Runtimes on Amazon Linux 2 (glibc 2.26): the layer must not claim them.
const AL2_RUNTIMES: &[&str] = &[
    "provided",
    "provided.al2",
    "python3.8",
    "python3.9",
    "python3.10",
    "python3.11",
    "nodejs16.x",
    "nodejs18.x",
    "java8.al2",
    "java11",
    "java17",
    "ruby3.2",
    "dotnet6",
];

// ------------------------------------------------------------------------------------------
// Reading the template
// ------------------------------------------------------------------------------------------

/// A page of the docs (`README.md`, `docs/rotator.md`), which some checks hold to what the
/// stack and the code do.
fn doc(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path))
        .unwrap_or_else(|err| panic!("reading {path}: {err}"))
}

/// Every page of the docs: the README, CONTRIBUTING.md, ARCHITECTURE.md when it is there,
/// and each page under `docs/`.
fn doc_pages() -> Vec<String> {
    let mut pages: Vec<String> = ["README.md", "CONTRIBUTING.md", "ARCHITECTURE.md"]
        .into_iter()
        .filter(|page| workspace_root().join(page).is_file())
        .map(str::to_owned)
        .collect();
    let mut under_docs: Vec<String> = std::fs::read_dir(workspace_root().join("docs"))
        .expect("docs/ is readable")
        .map(|entry| entry.expect("a docs/ entry").file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    under_docs.sort_unstable();
    pages.extend(under_docs);
    pages
}

/// The `## ` section headings of a markdown page, outside code blocks.
fn sections(text: &str) -> Vec<&str> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with("## ") {
            out.push(line);
        }
    }
    out
}

/// template.yaml as JSON, with CloudFormation's short tags (`!Sub x`) turned into their
/// long forms (`{"Fn::Sub": x}`), so checks see one shape whichever form the file uses.
fn template() -> Value {
    let path = workspace_root().join("template.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let yaml: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|err| panic!("parsing template.yaml: {err}"));
    to_json(yaml)
}

fn to_json(yaml: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64())
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => panic!("non-string key in template.yaml: {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = to_json(tagged.value);
            match name {
                "Ref" | "Condition" => json!({ name: value }),
                // `!GetAtt Res.Attr` is the string form of ["Res", "Attr"].
                "GetAtt" => match value {
                    Value::String(s) => {
                        let (resource, attribute) = s
                            .split_once('.')
                            .unwrap_or_else(|| panic!("!GetAtt {s} has no attribute"));
                        json!({ "Fn::GetAtt": [resource, attribute] })
                    }
                    other => json!({ "Fn::GetAtt": other }),
                },
                _ => json!({ format!("Fn::{name}"): value }),
            }
        }
    }
}

fn resources(template: &Value) -> &Map<String, Value> {
    template["Resources"]
        .as_object()
        .expect("template has Resources")
}

fn resource<'a>(template: &'a Value, logical_id: &str) -> &'a Value {
    resources(template)
        .get(logical_id)
        .unwrap_or_else(|| panic!("template has no resource {logical_id}"))
}

fn resources_of_type<'a>(template: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    resources(template)
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.as_str(), r))
        .collect()
}

/// A list property, or a single value as a list of one.
fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// Statements of a policy document, with `Fn::If` entries expanded to both branches (an
/// `AWS::NoValue` branch is no statement).
fn statements(document: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for entry in as_list(&document["Statement"]) {
        match entry.get("Fn::If").and_then(Value::as_array) {
            Some(branches) => {
                for branch in branches.iter().skip(1) {
                    if branch.get("Ref") != Some(&json!("AWS::NoValue")) {
                        out.push(branch);
                    }
                }
            }
            None => out.push(entry),
        }
    }
    out
}

/// Every statement of every IAM policy in the template (not key policies), with where it is.
fn iam_statements(template: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for (id, res) in resources(template) {
        let props = &res["Properties"];
        let documents: Vec<&Value> = match res["Type"].as_str() {
            Some("AWS::IAM::Role") => as_list(&props["Policies"])
                .into_iter()
                .map(|p| &p["PolicyDocument"])
                .collect(),
            Some("AWS::IAM::RolePolicy" | "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy") => {
                vec![&props["PolicyDocument"]]
            }
            // SAM's own policy list: inline documents (templates/ARNs are checked below).
            Some("AWS::Serverless::Function") => as_list(&props["Policies"])
                .into_iter()
                .filter(|p| p.get("Statement").is_some())
                .collect(),
            _ => Vec::new(),
        };
        for document in documents {
            for statement in statements(document) {
                let sid = statement["Sid"].as_str().unwrap_or("(no Sid)");
                out.push((format!("{id}/{sid}"), statement));
            }
        }
    }
    out
}

fn key_policy_statements(template: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for (id, key) in resources_of_type(template, "AWS::KMS::Key") {
        for statement in statements(&key["Properties"]["KeyPolicy"]) {
            let sid = statement["Sid"].as_str().unwrap_or("(no Sid)");
            out.push((format!("{id}/{sid}"), statement));
        }
    }
    out
}

fn actions(statement: &Value) -> Vec<String> {
    as_list(&statement["Action"])
        .into_iter()
        .map(|a| {
            a.as_str()
                .unwrap_or_else(|| panic!("non-string Action {a}"))
                .to_ascii_lowercase()
        })
        .collect()
}

/// Every literal string inside a value (through intrinsic functions).
fn strings(value: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    collect_strings(value, &mut out);
    out
}

fn collect_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// The string a `Fn::Sub` (either form) renders, given its variables.
fn render_sub(sub: &Value, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let (text, locals) = match sub {
        Value::String(s) => (s.as_str(), None),
        Value::Array(parts) => (
            parts[0].as_str().expect("Fn::Sub template is a string"),
            parts.get(1).and_then(Value::as_object),
        ),
        other => panic!("unexpected Fn::Sub {other}"),
    };
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').expect("unterminated ${ in Fn::Sub");
        let name = &after[..end];
        if let Some(literal) = name.strip_prefix('!') {
            out.push_str("${");
            out.push_str(literal);
            out.push('}');
        } else if let Some(local) = locals.and_then(|l| l.get(name)) {
            // A variable that cannot be worked out offline (a resource's ARN) stays a marker.
            out.push_str(&evaluate(local, vars).unwrap_or_else(|| format!("<{name}>")));
        } else {
            out.push_str(&vars(name).unwrap_or_else(|| panic!("no value for ${{{name}}}")));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The string an intrinsic function gives, when it only depends on `vars` (parameters and
/// pseudo parameters): literals, `Ref`, `Fn::Sub`, and `Fn::Select` of `Fn::Split`.
fn evaluate(value: &Value, vars: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(s) = value.as_str() {
        return Some(s.to_owned());
    }
    if let Some(name) = value.get("Ref").and_then(Value::as_str) {
        return vars(name);
    }
    if let Some(sub) = value.get("Fn::Sub") {
        return Some(render_sub(sub, vars));
    }
    let select = value.get("Fn::Select")?.as_array()?;
    let index = usize::try_from(select.first()?.as_u64()?).ok()?;
    let split = select.get(1)?.get("Fn::Split")?.as_array()?;
    let delimiter = split.first()?.as_str()?;
    let source = evaluate(split.get(1)?, vars)?;
    source.split(delimiter).nth(index).map(str::to_owned)
}

/// Parameter defaults, and pseudo parameters as in us-east-1 of the aws partition.
fn deployed_value(template: &Value, name: &str) -> Option<String> {
    let pseudo = match name {
        "AWS::Partition" => "aws",
        "AWS::Region" => "us-east-1",
        "AWS::AccountId" => "123456789012",
        "AWS::URLSuffix" => "amazonaws.com",
        _ => return parameter_default(template, name),
    };
    Some(pseudo.to_owned())
}

/// A parameter's default as the string `Fn::Sub` would substitute.
fn parameter_default(template: &Value, name: &str) -> Option<String> {
    let default = template["Parameters"].get(name)?.get("Default")?;
    Some(match default {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn sub_of(value: &Value) -> Option<&str> {
    match value.get("Fn::Sub")? {
        Value::String(s) => Some(s),
        Value::Array(parts) => parts.first()?.as_str(),
        _ => None,
    }
}

fn condition_value<'a>(statement: &'a Value, operator: &str, key: &str) -> Option<&'a Value> {
    let block = statement["Condition"].get(operator)?.as_object()?;
    block
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

// ------------------------------------------------------------------------------------------
// IAM and KMS
// ------------------------------------------------------------------------------------------

#[test]
fn ssm_and_kms_actions_never_have_a_wildcard_resource() {
    let template = template();
    let all = iam_statements(&template);
    assert!(
        all.len() >= 8,
        "expected the roles' policies, found {}",
        all.len()
    );
    for (place, statement) in all {
        assert!(
            statement.get("NotResource").is_none() && statement.get("NotAction").is_none(),
            "{place}: NotResource/NotAction grant by exclusion"
        );
        let actions = actions(statement);
        let scoped: Vec<&String> = actions
            .iter()
            .filter(|a| a.starts_with("ssm:") || a.starts_with("kms:"))
            .collect();
        for action in &scoped {
            assert!(!action.contains('*'), "{place}: wildcard action {action}");
        }
        let resource_strings = strings(&statement["Resource"]);
        assert!(!resource_strings.is_empty(), "{place}: no Resource");
        let wildcard = resource_strings
            .iter()
            .any(|r| *r == "*" || r.ends_with(":*") || r.contains(":*:"));
        if actions
            .iter()
            .all(|a| NO_RESOURCE_LEVEL.iter().any(|n| n.eq_ignore_ascii_case(a)))
        {
            // Alone in its statement, so "*" reaches nothing else.
            continue;
        }
        assert!(
            scoped.is_empty() || !wildcard,
            "{place}: {scoped:?} on a wildcard resource {resource_strings:?}"
        );
    }
}

#[test]
fn wildcard_resources_are_only_the_documented_exceptions() {
    let template = template();
    let text = std::fs::read_to_string(workspace_root().join("template.yaml")).expect("template");
    let lines: Vec<&str> = text.lines().collect();
    let mut found = BTreeSet::new();
    for (place, statement) in iam_statements(&template) {
        if !strings(&statement["Resource"]).contains(&"*") {
            continue;
        }
        found.insert(place.clone());
        for action in actions(statement) {
            assert!(
                NO_RESOURCE_LEVEL
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&action)),
                "{place}: {action} supports resource-level permissions; scope it"
            );
        }
        // The comment right above the statement (or above its `- !If` / `- Condition`
        // header) says why "*" is needed.
        let sid = statement["Sid"]
            .as_str()
            .expect("a wildcard statement has a Sid");
        let mut at = lines
            .iter()
            .position(|l| l.trim() == format!("- Sid: {sid}"))
            .unwrap_or_else(|| panic!("{place}: Sid not found in template.yaml"));
        while at > 0 && lines[at - 1].trim().starts_with("- ") && !lines[at - 1].contains(':') {
            at -= 1;
        }
        assert!(
            at > 0 && lines[at - 1].trim_start().starts_with('#'),
            "{place}: no comment above the statement says why it needs \"*\""
        );
    }
    let expected: BTreeSet<String> = WILDCARD_STATEMENTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(found, expected);
}

#[test]
fn kms_cryptography_is_only_via_a_service_and_for_owned_names() {
    let template = template();
    let mut checked = 0;
    let all = iam_statements(&template)
        .into_iter()
        .chain(key_policy_statements(&template));
    for (place, statement) in all {
        let actions = actions(statement);
        if !actions
            .iter()
            .any(|a| KMS_CRYPTO.contains(&a.as_str()) || a == "kms:*")
        {
            continue;
        }
        assert_eq!(statement["Effect"], "Allow");
        let via = condition_value(statement, "StringEquals", "kms:ViaService")
            .unwrap_or_else(|| panic!("{place}: KMS use without a kms:ViaService condition"));
        let via = sub_of(via).unwrap_or_else(|| panic!("{place}: kms:ViaService not a Fn::Sub"));
        assert!(
            via.ends_with(".${AWS::Region}.${AWS::URLSuffix}"),
            "{place}: kms:ViaService {via} is not region- and partition-aware"
        );
        if via == SSM_VIA_SERVICE {
            let context = condition_value(
                statement,
                "StringLike",
                "kms:EncryptionContext:PARAMETER_ARN",
            )
            .unwrap_or_else(|| panic!("{place}: no kms:EncryptionContext:PARAMETER_ARN"));
            assert_eq!(sub_of(context), Some(OWNED_PARAMETER_ARN), "{place}");
        } else {
            let context = statement["Condition"]["StringLike"]
                .as_object()
                .map(|block| {
                    block
                        .keys()
                        .any(|k| k.starts_with("kms:EncryptionContext:"))
                })
                .unwrap_or(false);
            assert!(
                context,
                "{place}: KMS use via {via} without an encryption context"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected rotator and consumer grants, checked {checked}"
    );
}

#[test]
fn the_rotator_encrypts_and_the_consumer_decrypts_owned_parameters() {
    let template = template();
    let grants = |role: &str, action: &str| {
        let in_role_policy = iam_statements(&template).into_iter().any(|(place, s)| {
            place.starts_with(&format!("{role}Policy/"))
                && actions(s).contains(&action.to_string())
                && condition_value(s, "StringLike", "kms:EncryptionContext:PARAMETER_ARN").is_some()
        });
        let in_key_policy = key_policy_statements(&template).into_iter().any(|(_, s)| {
            actions(s).contains(&action.to_string())
                && condition_value(s, "ArnEquals", "aws:PrincipalArn")
                    == Some(&json!({"Fn::GetAtt": [role, "Arn"]}))
                && condition_value(s, "StringLike", "kms:EncryptionContext:PARAMETER_ARN").is_some()
        });
        in_role_policy && in_key_policy
    };
    assert!(grants("RotatorRole", "kms:encrypt"));
    assert!(grants("RotatorRole", "kms:generatedatakey"));
    assert!(grants("ConsumerRole", "kms:decrypt"));
    assert!(
        !grants("ConsumerRole", "kms:encrypt"),
        "the consumer only reads"
    );

    let ssm_actions = |role: &str| -> BTreeSet<String> {
        iam_statements(&template)
            .into_iter()
            .filter(|(place, _)| place.starts_with(&format!("{role}Policy/")))
            .flat_map(|(_, s)| actions(s))
            .filter(|a| a.starts_with("ssm:"))
            .collect()
    };
    let consumer = ssm_actions("ConsumerRole");
    assert!(consumer.contains("ssm:getparameter"));
    assert!(
        consumer.iter().all(|a| a.starts_with("ssm:getparameter")),
        "the consumer only reads: {consumer:?}"
    );
    let rotator = ssm_actions("RotatorRole");
    assert!(
        !rotator.contains("ssm:deleteparameter"),
        "rotation never deletes"
    );
}

/// The AWS calls in rotator/src (outside unit tests) as IAM actions (`ssm:PutParameter`),
/// found as `<client>.<operation>()` with the rotator's client names: `ssm`, `kms` and `sm`
/// (Secrets Manager).
fn rotator_calls() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let dir = workspace_root().join("rotator/src");
    for entry in std::fs::read_dir(&dir).expect("rotator/src") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        // Builders are chained over lines (`self\n.ssm\n.put_parameter()`).
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        for (client, service) in [("ssm.", "ssm"), ("kms.", "kms"), ("sm.", "secretsmanager")] {
            let mut from = 0;
            while let Some(found) = code[from..].find(client) {
                let start = from + found;
                from = start + client.len();
                let before = code[..start].chars().last();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue; // `ssm.` inside `aws_sdk_ssm.`, `sm.` inside `ssm.`
                }
                let rest = &code[from..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if name.is_empty() || name == "clone" || !rest[name.len()..].starts_with("()") {
                    continue;
                }
                let operation: String = name
                    .split('_')
                    .map(|w| {
                        let mut chars = w.chars();
                        chars.next().map_or_else(String::new, |c| {
                            c.to_ascii_uppercase().to_string() + chars.as_str()
                        })
                    })
                    .collect();
                out.insert(format!("{service}:{operation}"));
            }
        }
    }
    out
}

#[test]
fn the_rotator_role_allows_exactly_the_calls_the_rotator_makes() {
    let template = template();
    let calls = rotator_calls();
    // The scan itself works: these calls are certainly made.
    for known in [
        "ssm:PutParameter",
        "ssm:DescribeParameters",
        "kms:DescribeKey",
        "secretsmanager:PutSecretValue",
    ] {
        assert!(calls.contains(known), "{known} not found in {calls:?}");
    }
    let granted: BTreeSet<String> = iam_statements(&template)
        .into_iter()
        .filter(|(place, _)| place.starts_with("RotatorRolePolicy/"))
        .flat_map(|(_, s)| actions(s))
        .collect();
    let of = |set: &BTreeSet<String>, prefix: &str| -> BTreeSet<String> {
        set.iter()
            .filter(|a| a.starts_with(prefix))
            .map(|a| a.to_ascii_lowercase())
            .collect()
    };

    assert_eq!(
        of(&granted, "ssm:"),
        of(&calls, "ssm:"),
        "SSM: granted vs called"
    );

    // KMS: what the rotator calls, plus what SSM calls for it; GenerateRandom ("*" only)
    // is used only with "randomSource": "kms", which the schedule's input does not set.
    let mut kms = of(&calls, "kms:");
    assert!(kms.remove("kms:generaterandom"), "{calls:?}");
    kms.extend(KMS_VIA_SSM.iter().map(|a| a.to_string()));
    assert_eq!(of(&granted, "kms:"), kms, "KMS: granted vs needed");
    let input = render_sub(&rotation_event(&template)["Input"]["Fn::Sub"], &|name| {
        deployed_value(&template, name)
    });
    assert!(!input.contains("randomSource"), "{input}");

    // Not granted by this stack, which attaches the rotator to no secret and rotates its
    // own account only; the rotator's page says what each would need.
    assert!(of(&granted, "secretsmanager:").is_empty(), "{granted:?}");
    assert!(of(&granted, "sts:").is_empty(), "{granted:?}");
    let docs = doc("docs/rotator.md").to_ascii_lowercase();
    for call in of(&calls, "secretsmanager:")
        .iter()
        .chain(&["sts:assumerole".to_owned()])
    {
        let operation = call.split(':').nth(1).unwrap_or_default();
        assert!(
            docs.contains(operation),
            "docs/rotator.md does not say that {call} is needed"
        );
    }
}

/// Each page of the docs is read top to bottom by a newcomer: each of its sections appears
/// once (an edit that pastes a section again leaves two that disagree). The README keeps
/// the front door's sections, and the figures have their own page.
#[test]
fn each_doc_page_has_each_section_once() {
    let pages = doc_pages();
    for page in &pages {
        let text = doc(page);
        let mut seen = BTreeSet::new();
        for line in sections(&text) {
            assert!(seen.insert(line), "{page} has {line:?} twice");
        }
    }
    let readme = doc("README.md");
    let readme_sections = sections(&readme);
    for needed in [
        "## Two commands",
        "## Quick start",
        "## Routes",
        "## Documentation",
    ] {
        assert!(
            readme_sections.contains(&needed),
            "README.md lacks {needed}: {readme_sections:?}"
        );
    }
    for page in pages.iter().filter(|page| page.starts_with("docs/")) {
        assert!(
            readme.contains(&format!("]({page}")),
            "README.md does not link {page}"
        );
    }
    assert!(
        pages.iter().any(|page| page == "docs/benchmarks.md"),
        "{pages:?}"
    );
    assert!(
        sections(&doc("docs/benchmarks.md")).contains(&"## `make bench`"),
        "docs/benchmarks.md lacks its make bench section"
    );
}

#[test]
fn the_intent_tag_is_the_only_tag_the_rotator_may_set() {
    let template = template();
    let tagging: Vec<(String, &Value)> = iam_statements(&template)
        .into_iter()
        .filter(|(place, s)| {
            place.starts_with("RotatorRolePolicy/")
                && actions(s).contains(&"ssm:addtagstoresource".to_owned())
        })
        .collect();
    assert_eq!(tagging.len(), 1, "one statement grants tagging");
    let (place, statement) = &tagging[0];
    assert_eq!(
        actions(statement),
        ["ssm:addtagstoresource"],
        "{place}: alone"
    );
    assert_eq!(sub_of(&statement["Resource"]), Some(OWNED_PARAMETER_ARN));
    assert_eq!(
        condition_value(statement, "ForAllValues:StringEquals", "aws:TagKeys"),
        Some(&json!([lockbox_rotator::INTENT_TAG])),
        "{place}"
    );
}

#[test]
fn reading_by_path_is_allowed_on_the_path_and_below_it() {
    let template = template();
    let vars = |name: &str| deployed_value(&template, name);
    // The rotator selects with DescribeParameters, so only the consumer lists by path.
    let resources: BTreeSet<String> = iam_statements(&template)
        .into_iter()
        .filter(|(place, s)| {
            place.starts_with("ConsumerRolePolicy/")
                && actions(s).contains(&"ssm:getparametersbypath".to_string())
        })
        .flat_map(|(_, s)| as_list(&s["Resource"]))
        .filter_map(|r| evaluate(r, &vars))
        .collect();
    let path = "arn:aws:ssm:us-east-1:123456789012:parameter/app";
    // Path=/app is checked against parameter/app; Path=/app/ against parameter/app/.
    assert!(resources.contains(path), "{resources:?}");
    assert!(resources.contains(&format!("{path}/*")), "{resources:?}");
    assert_eq!(resources.len(), 2, "{resources:?}");
}

#[test]
fn the_key_is_symmetric_rotated_and_its_admin_statement_grants_no_cryptography() {
    let template = template();
    let key = &resource(&template, "Key")["Properties"];
    assert_eq!(key["EnableKeyRotation"], true);
    assert!(key["KeySpec"].is_null() || key["KeySpec"] == "SYMMETRIC_DEFAULT");
    assert!(key["KeyUsage"].is_null() || key["KeyUsage"] == "ENCRYPT_DECRYPT");
    assert_eq!(resource(&template, "Key")["Condition"], "CreateKey");
    assert_eq!(resource(&template, "KeyAlias")["Condition"], "CreateKey");

    for (place, statement) in key_policy_statements(&template) {
        let actions = actions(statement);
        assert!(!actions.contains(&"kms:*".to_string()), "{place}: kms:*");
        if statement.get("Condition").is_none() {
            for action in &actions {
                assert!(
                    !KMS_CRYPTO.contains(&action.as_str()),
                    "{place}: {action} without conditions"
                );
            }
        }
        for principal in strings(&statement["Principal"]) {
            assert!(
                principal.starts_with("arn:${AWS::Partition}:iam::${AWS::AccountId}:"),
                "{place}: principal {principal} outside the account"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// The rotator and its schedule
// ------------------------------------------------------------------------------------------

fn rotation_event(template: &Value) -> &Value {
    let events = resource(template, "RotatorFunction")["Properties"]["Events"]
        .as_object()
        .expect("the rotator has Events");
    let schedules: Vec<&Value> = events
        .values()
        .filter(|e| e["Type"] == "ScheduleV2")
        .collect();
    assert_eq!(schedules.len(), 1, "one ScheduleV2 event");
    &schedules[0]["Properties"]
}

#[test]
fn the_schedule_retries_and_dead_letters_in_the_chosen_time_zone() {
    let template = template();
    let schedule = rotation_event(&template);
    assert_eq!(
        schedule["ScheduleExpression"],
        json!({"Ref": "RotationSchedule"})
    );
    assert_eq!(
        schedule["ScheduleExpressionTimezone"],
        json!({"Ref": "RotationTimezone"})
    );
    assert!(schedule["FlexibleTimeWindow"]["Mode"].is_string());

    let retry = &schedule["RetryPolicy"];
    let attempts = retry["MaximumRetryAttempts"]
        .as_i64()
        .expect("MaximumRetryAttempts");
    let age = retry["MaximumEventAgeInSeconds"]
        .as_i64()
        .expect("MaximumEventAgeInSeconds");
    assert!((1..=185).contains(&attempts), "retries {attempts}");
    assert!((60..=86400).contains(&age), "event age {age}");

    let dlq = &schedule["DeadLetterConfig"];
    assert!(
        dlq["Arn"].is_object() || dlq["Type"] == "SQS",
        "DeadLetterConfig needs a queue: {dlq}"
    );
    if let Some(queue) = dlq["Arn"]["Fn::GetAtt"][0].as_str() {
        assert_eq!(resource(&template, queue)["Type"], "AWS::SQS::Queue");
    }

    let default = parameter_default(&template, "RotationSchedule").expect("a default schedule");
    assert!(
        ["rate(", "cron(", "at("]
            .iter()
            .any(|p| default.starts_with(p)),
        "{default}"
    );
}

#[test]
fn the_schedule_input_is_json_with_the_scheduled_time_as_rotation_id() {
    let template = template();
    let input = &rotation_event(&template)["Input"];
    let raw = sub_of(input).expect("Input is a Fn::Sub");
    assert!(raw.contains("<aws.scheduler.scheduled-time>"));

    let rendered = render_sub(&input["Fn::Sub"], &|name| {
        parameter_default(&template, name)
    });
    let parsed: Value = serde_json::from_str(&rendered)
        .unwrap_or_else(|err| panic!("Input is not JSON once substituted ({err}): {rendered}"));
    assert_eq!(parsed["rotationId"], "<aws.scheduler.scheduled-time>");
    assert_eq!(parsed["mode"], "regenerate");
    assert_eq!(parsed["keyId"], "<KeyArn>");
    assert_eq!(parsed["targets"]["paths"], json!(["/app/"]));
    assert_eq!(parsed["policy"]["length"], 32);
    let exclude = parsed["policy"]["exclude"]
        .as_str()
        .expect("policy.exclude");
    for c in ['"', '\\', '/', '@'] {
        assert!(exclude.contains(c), "exclude {exclude:?} lacks {c:?}");
    }

    // The KeyArn variable is the created key or the one given.
    let locals = &input["Fn::Sub"][1]["KeyArn"]["Fn::If"];
    assert_eq!(locals[0], "CreateKey");
    assert_eq!(locals[1], json!({"Fn::GetAtt": ["Key", "Arn"]}));
    assert_eq!(locals[2], json!({"Ref": "ExistingKeyArn"}));
}

#[test]
fn the_schedule_input_is_accepted_by_the_rotators_own_parser() {
    let template = template();
    let sub = &rotation_event(&template)["Input"]["Fn::Sub"];
    let partition = deployed_value(&template, "AWS::Partition").expect("partition");
    let key_arn = format!(
        "arn:{partition}:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    );
    let default_length = parameter_default(&template, "RotationValueLength").expect("length");
    for (length, exclude) in [
        (default_length.as_str(), None),
        ("16", Some("")),
        ("4096", Some(" !#$%&'()*+,-./:;<=>?@[]^")),
    ] {
        let vars = |name: &str| match (name, exclude) {
            ("RotationValueLength", _) => Some(length.to_owned()),
            ("RotationExcludeCharacters", Some(e)) => Some(e.to_owned()),
            _ => deployed_value(&template, name),
        };
        // What EventBridge Scheduler delivers: the scheduled time substituted.
        let delivered = render_sub(sub, &vars)
            .replace("<KeyArn>", &key_arn)
            .replace("<aws.scheduler.scheduled-time>", "2026-11-22T03:00:00Z");
        let rotation = lockbox_rotator::input::parse(&delivered)
            .and_then(|input| input.validate(None))
            .unwrap_or_else(|e| {
                panic!("the rotator refuses the schedule's input: {e}\n{delivered}")
            });
        assert_eq!(rotation.key_id, key_arn);
        assert_eq!(rotation.id.id, "2026-11-22T03:00:00Z");
        assert_eq!(rotation.targets.paths, ["/app/"]);
        assert!(rotation.access.is_default(), "own account and region");
        let policy = rotation.policy.expect("regenerate has a policy");
        assert_eq!(policy.length().to_string(), length);
        for never in ['"', '\\'] {
            assert!(
                !policy.alphabet().contains(&(never as u8)),
                "{never:?} generated"
            );
        }
        for c in exclude.unwrap_or("/@").chars() {
            assert!(!policy.alphabet().contains(&(c as u8)), "{c:?} generated");
        }
    }
}

#[test]
fn the_rotator_runs_on_al2023_and_failed_runs_reach_a_queue() {
    let template = template();
    let rotator = resource(&template, "RotatorFunction");
    let props = &rotator["Properties"];
    assert_eq!(props["Runtime"], "provided.al2023");
    assert_eq!(props["Handler"], "bootstrap");
    assert_eq!(props["Architectures"], json!([{"Ref": "Architecture"}]));
    assert_eq!(props["Role"], json!({"Fn::GetAtt": ["RotatorRole", "Arn"]}));

    let on_failure = &props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"];
    assert_eq!(on_failure["Type"], "SQS");
    let queue = on_failure["Destination"]["Fn::GetAtt"][0]
        .as_str()
        .expect("OnFailure names a queue of the stack");
    assert_eq!(resource(&template, queue)["Type"], "AWS::SQS::Queue");
    // The role may send there (an explicit role gets nothing from SAM).
    assert!(iam_statements(&template).into_iter().any(|(place, s)| {
        place.starts_with("RotatorRolePolicy/")
            && actions(s).contains(&"sqs:sendmessage".to_string())
            && s["Resource"] == json!({"Fn::GetAtt": [queue, "Arn"]})
    }));
}

// ------------------------------------------------------------------------------------------
// The layer, the sample function, parameters, outputs, partitions
// ------------------------------------------------------------------------------------------

#[test]
fn the_layer_is_built_by_make_for_amazon_linux_2023_runtimes() {
    let template = template();
    let layer = resource(&template, "LockboxLayer");
    assert_eq!(layer["Type"], "AWS::Serverless::LayerVersion");
    assert_eq!(layer["Metadata"]["BuildMethod"], "makefile");
    let props = &layer["Properties"];
    assert_eq!(
        props["CompatibleArchitectures"],
        json!([{"Ref": "Architecture"}])
    );
    let runtimes: Vec<&str> = as_list(&props["CompatibleRuntimes"])
        .into_iter()
        .filter_map(Value::as_str)
        .collect();
    for needed in ["provided.al2023", "python3.12", "nodejs20.x"] {
        assert!(runtimes.contains(&needed), "runtimes lack {needed}");
    }
    for runtime in &runtimes {
        assert!(
            !AL2_RUNTIMES.contains(runtime),
            "{runtime} is Amazon Linux 2 (glibc 2.26): the extension needs up to 2.34"
        );
    }
}

#[test]
fn every_makefile_built_resource_has_its_make_target() {
    let template = template();
    let makefile = std::fs::read_to_string(workspace_root().join("Makefile")).expect("Makefile");
    let mut built = 0;
    for (id, res) in resources(&template) {
        if res["Metadata"]["BuildMethod"] == "makefile" {
            let target = format!("\nbuild-{id}:");
            assert!(makefile.contains(&target), "Makefile lacks build-{id}");
            built += 1;
        }
    }
    assert_eq!(built, 2, "the layer and the rotator");
}

#[test]
fn the_sample_function_uses_the_layer_with_prefetch_and_a_read_only_role() {
    let template = template();
    let props = &resource(&template, "ConsumerFunction")["Properties"];
    assert!(as_list(&props["Layers"]).contains(&&json!({"Ref": "LockboxLayer"})));
    let prefetch = &props["Environment"]["Variables"]["LOCKBOX_PREFETCH"];
    assert!(!prefetch.is_null(), "LOCKBOX_PREFETCH is set");
    assert!(
        strings(prefetch).iter().any(|s| s.contains("${OwnedPath}")),
        "it prefetches the owned path"
    );
    assert_eq!(
        props["Role"],
        json!({"Fn::GetAtt": ["ConsumerRole", "Arn"]})
    );
    let runtime = props["Runtime"].as_str().expect("Runtime");
    assert!(!AL2_RUNTIMES.contains(&runtime));
}

#[test]
fn parameters_have_the_documented_defaults() {
    let template = template();
    let parameters = &template["Parameters"];
    assert_eq!(
        parameters["Architecture"]["AllowedValues"],
        json!(["x86_64", "arm64"])
    );
    for (name, default) in [
        ("Architecture", "x86_64"),
        ("OwnedPath", "/app/"),
        ("RotationTimezone", "UTC"),
        ("ExistingKeyArn", ""),
        ("SecretNamePrefix", ""),
    ] {
        assert_eq!(
            parameter_default(&template, name).as_deref(),
            Some(default),
            "{name}"
        );
    }
    for name in [
        "RotationSchedule",
        "RotationValueLength",
        "RotationExcludeCharacters",
    ] {
        assert!(
            parameter_default(&template, name).is_some(),
            "{name} has a default"
        );
    }
    assert_eq!(
        template["Conditions"]["CreateKey"],
        json!({"Fn::Equals": [{"Ref": "ExistingKeyArn"}, ""]})
    );
}

#[test]
fn outputs_name_the_layer_the_functions_and_the_key() {
    let template = template();
    let outputs = &template["Outputs"];
    assert_eq!(
        outputs["LayerVersionArn"]["Value"],
        json!({"Ref": "LockboxLayer"})
    );
    assert_eq!(
        outputs["RotatorFunctionName"]["Value"],
        json!({"Ref": "RotatorFunction"})
    );
    assert_eq!(
        outputs["ConsumerFunctionName"]["Value"],
        json!({"Ref": "ConsumerFunction"})
    );
    assert!(outputs["KeyArn"]["Value"]["Fn::If"].is_array());
}

#[test]
fn every_arn_and_service_host_is_partition_aware() {
    let template = template();
    let mut arns = 0;
    walk_strings(&template, "", &mut |place, s| {
        if place.ends_with("/AllowedPattern") {
            return; // a regular expression accepting every partition
        }
        assert!(!s.contains("arn:aws:"), "{place}: literal partition in {s}");
        let mut rest = s;
        while let Some(at) = rest.find("arn:") {
            assert!(
                rest[at..].starts_with("arn:${AWS::Partition}:"),
                "{place}: ARN without ${{AWS::Partition}}: {s}"
            );
            arns += 1;
            rest = &rest[at + 4..];
        }
        if s.contains("amazonaws.com") {
            assert!(
                place.contains("/Principal/Service"),
                "{place}: literal amazonaws.com (use ${{AWS::URLSuffix}}): {s}"
            );
        }
    });
    assert!(arns >= 10, "expected the template's ARNs, saw {arns}");
}

fn walk_strings(value: &Value, place: &str, visit: &mut dyn FnMut(&str, &str)) {
    match value {
        Value::String(s) => visit(place, s),
        Value::Array(items) => items.iter().for_each(|v| walk_strings(v, place, visit)),
        Value::Object(map) => map
            .iter()
            .for_each(|(k, v)| walk_strings(v, &format!("{place}/{k}"), visit)),
        _ => {}
    }
}

// ------------------------------------------------------------------------------------------
// The layer zip (make layer / make test)
// ------------------------------------------------------------------------------------------

/// The zips named by `LOCKBOX_LAYER_ZIP` (several separated like PATH; relative paths are
/// from the workspace root, since cargo runs tests in the package's folder).
fn layer_zips() -> Vec<PathBuf> {
    let value = std::env::var_os("LOCKBOX_LAYER_ZIP").expect(
        "LOCKBOX_LAYER_ZIP names the layer zip(s) to check; `make test` (x86_64) and \
         `make layer-check` (all of dist/) set it",
    );
    let zips: Vec<PathBuf> = std::env::split_paths(&value)
        .map(|zip| workspace_root().join(zip))
        .collect();
    assert!(!zips.is_empty(), "LOCKBOX_LAYER_ZIP is empty");
    zips
}

/// The layer's architecture from its file name (`lockbox-layer-<arch>.zip`).
fn zip_architecture(zip: &Path) -> object::Architecture {
    let name = zip.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.contains("arm64") || name.contains("aarch64") {
        object::Architecture::Aarch64
    } else if name.contains("x86_64") {
        object::Architecture::X86_64
    } else {
        panic!("{name}: cannot tell the architecture from the name")
    }
}

/// One file of a layer zip.
struct LayerFile {
    name: String,
    /// Unix mode as recorded in the zip (type and permission bits).
    mode: u32,
    bytes: Vec<u8>,
}

/// The files of a layer zip, and its folder entries' names.
fn read_layer(zip: &Path) -> (Vec<LayerFile>, Vec<String>) {
    let file = std::fs::File::open(zip).unwrap_or_else(|e| panic!("{}: {e}", zip.display()));
    let mut archive = zip::ZipArchive::new(file).expect("a zip archive");
    let (mut files, mut folders) = (Vec::new(), Vec::new());
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).expect("a readable entry");
        if entry.is_dir() {
            folders.push(entry.name().to_owned());
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("the entry's bytes");
        files.push(LayerFile {
            name: entry.name().to_owned(),
            mode: entry.unix_mode().unwrap_or(0),
            bytes,
        });
    }
    (files, folders)
}

/// What the layer must hold: the extension, and the exec wrapper (at the layer's root, so
/// Lambda does not start it as an extension) when the workspace builds one.
fn expected_layer_files() -> Vec<&'static str> {
    let manifest = std::fs::read_to_string(workspace_root().join("extension/Cargo.toml"))
        .expect("extension/Cargo.toml");
    let mut files = vec!["extensions/lockbox"];
    if manifest.contains("name = \"lockbox-exec\"") {
        files.push("lockbox-exec");
    }
    files.sort_unstable();
    files
}

/// Every `GLIBC_x.y[.z]` version the binary's dynamic string table names.
fn glibc_versions(elf: &object::File<'_>) -> Vec<(u32, u32, u32)> {
    use object::{Object, ObjectSection};
    let Some(dynstr) = elf.section_by_name(".dynstr") else {
        return Vec::new();
    };
    let data = dynstr.data().expect(".dynstr data");
    let mut versions = Vec::new();
    for name in data.split(|b| *b == 0) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let Some(version) = name.strip_prefix("GLIBC_") else {
            continue;
        };
        let parts: Vec<u32> = version.split('.').map_while(|p| p.parse().ok()).collect();
        if let [major, minor, rest @ ..] = parts.as_slice() {
            versions.push((*major, *minor, rest.first().copied().unwrap_or(0)));
        }
    }
    versions.sort_unstable();
    versions
}

#[test]
#[ignore = "needs LOCKBOX_LAYER_ZIP: make test / make layer-check"]
fn layer_zip_holds_executables_for_amazon_linux_2023() {
    use object::Object;
    let expected = expected_layer_files();
    for zip in layer_zips() {
        let (files, folders) = read_layer(&zip);
        let mut names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, expected, "{}: files in the layer", zip.display());
        assert!(
            folders.iter().all(|f| f == "extensions/"),
            "{}: unexpected folders {folders:?}",
            zip.display()
        );

        let mut unpacked = 0;
        for file in &files {
            let what = format!("{}: {}", zip.display(), file.name);
            assert_eq!(file.mode & 0o170000, 0o100000, "{what}: a regular file");
            assert_eq!(
                file.mode & 0o7777,
                0o755,
                "{what}: mode {:o}",
                file.mode & 0o7777
            );

            let elf = object::File::parse(&*file.bytes).expect("an ELF executable");
            assert_eq!(elf.format(), object::BinaryFormat::Elf, "{what}");
            assert_eq!(elf.architecture(), zip_architecture(&zip), "{what}");
            let versions = glibc_versions(&elf);
            let highest = *versions
                .last()
                .unwrap_or_else(|| panic!("{what}: no GLIBC_ versions: not a glibc build?"));
            assert!(
                (highest.0, highest.1) <= MAX_GLIBC,
                "{what}: needs GLIBC_{}.{}.{}; provided.al2023 has {}.{}",
                highest.0,
                highest.1,
                highest.2,
                MAX_GLIBC.0,
                MAX_GLIBC.1
            );
            eprintln!(
                "{what}: {:.2} MiB, highest GLIBC_{}.{}",
                file.bytes.len() as f64 / 1048576.0,
                highest.0,
                highest.1
            );
            unpacked += file.bytes.len();
        }
        let zip_size = std::fs::metadata(&zip).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "{}: zip {:.2} MiB, unpacked {:.2} MiB",
            zip.display(),
            zip_size as f64 / 1048576.0,
            unpacked as f64 / 1048576.0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LOCKBOX_LAYER_ZIP: make test / make layer-check"]
async fn layer_extension_registers_and_serves_ping_in_the_sandbox() -> anyhow::Result<()> {
    let host = match std::env::consts::ARCH {
        "x86_64" => object::Architecture::X86_64,
        "aarch64" => object::Architecture::Aarch64,
        other => panic!("no layer runs on {other}"),
    };
    let zips: Vec<PathBuf> = layer_zips()
        .into_iter()
        .filter(|z| zip_architecture(z) == host)
        .collect();
    assert!(
        !zips.is_empty(),
        "no layer zip for this machine's architecture"
    );

    for zip in zips {
        // Unpacked the way Lambda unpacks a layer: /opt/extensions/lockbox, mode from the zip.
        let opt = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("opt-{}", random_hex(8)));
        let extension = opt.join("extensions").join("lockbox");
        std::fs::create_dir_all(extension.parent().expect("a parent"))?;
        let (files, _) = read_layer(&zip);
        let file = files
            .into_iter()
            .find(|f| f.name == "extensions/lockbox")
            .expect("extensions/lockbox in the layer");
        std::fs::write(&extension, &file.bytes)?;
        let mode = file.mode & 0o7777;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&extension, std::fs::Permissions::from_mode(mode))?;
        }

        let port = free_port()?;
        let token = format!("layer-{}", random_hex(16));
        let sandbox = Sandbox::builder()
            .binary(&extension)
            // Nothing is prefetched, so nothing should call AWS; if it did, it fails fast.
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_SESSION_TOKEN", &token)
            .env("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", port.to_string())
            .start()
            .await?;
        let registration = sandbox.wait_registered(INIT_TIMEOUT).await?;
        assert_eq!(registration.name, "lockbox", "{}", sandbox.report());
        sandbox.wait_init_done(INIT_TIMEOUT).await?;

        let client = ExtClient::new(port, token);
        let ping = client.get_without_token("/ping").await?;
        assert_eq!(ping.status, 200, "{}\n{}", ping.body, sandbox.report());

        let (status, took) = sandbox.shutdown(Duration::from_secs(5)).await?;
        assert!(status.success(), "exit {status}\n{}", sandbox.report());
        assert!(took < Duration::from_secs(2), "SHUTDOWN took {took:?}");
        let _ = std::fs::remove_dir_all(&opt);
    }
    Ok(())
}
