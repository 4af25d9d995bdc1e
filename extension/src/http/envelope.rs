//! The JSON shapes of the AWS layer's answers (field names, order and formats as captured
//! from it), written around the cached values.

use serde::Serialize;

use crate::domain::{Parameter, Secret, SecretBatchError};

/// The always-empty `ResultMetadata` object of the AWS layer's answers.
#[derive(Debug, Default, Serialize)]
pub struct ResultMetadata {}

/// Body of `/systemsmanager/parameters/get`.
#[derive(Debug, Serialize)]
pub struct ParameterResponse<'a> {
    /// The parameter.
    #[serde(rename = "Parameter")]
    pub parameter: &'a Parameter,
    /// Always `{}`.
    #[serde(rename = "ResultMetadata")]
    pub result_metadata: ResultMetadata,
}

/// Body of `/secretsmanager/get`: the secret's fields at the top level.
#[derive(Debug, Serialize)]
pub struct SecretResponse<'a> {
    /// The secret.
    #[serde(flatten)]
    pub secret: &'a Secret,
    /// Always `{}`.
    #[serde(rename = "ResultMetadata")]
    pub result_metadata: ResultMetadata,
}

/// Body of `/systemsmanager/parameters/get-many`, as `GetParameters` answers.
#[derive(Debug, Serialize)]
pub struct ParametersResponse<'a> {
    /// Found parameters, in the order asked.
    #[serde(rename = "Parameters")]
    pub parameters: Vec<&'a Parameter>,
    /// Names that do not exist.
    #[serde(rename = "InvalidParameters")]
    pub invalid_parameters: &'a [String],
    /// Always `{}`.
    #[serde(rename = "ResultMetadata")]
    pub result_metadata: ResultMetadata,
}

/// Body of `/systemsmanager/parameters/get-by-path`, as `GetParametersByPath` answers
/// (every page at once, so no `NextToken`).
#[derive(Debug, Serialize)]
pub struct PathResponse<'a> {
    /// The parameters under the path.
    #[serde(rename = "Parameters")]
    pub parameters: Vec<&'a Parameter>,
    /// Always `{}`.
    #[serde(rename = "ResultMetadata")]
    pub result_metadata: ResultMetadata,
}

/// Body of `/secretsmanager/get-many`, as `BatchGetSecretValue` answers.
#[derive(Debug, Serialize)]
pub struct SecretsResponse<'a> {
    /// Found secrets, in the order asked.
    #[serde(rename = "SecretValues")]
    pub secret_values: Vec<&'a Secret>,
    /// Per-secret failures.
    #[serde(rename = "Errors")]
    pub errors: &'a [SecretBatchError],
    /// Always `{}`.
    #[serde(rename = "ResultMetadata")]
    pub result_metadata: ResultMetadata,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ArnPrefixes, SecretBytes, SecretText, Timestamp};

    fn parameter() -> Parameter {
        Parameter {
            arn: Some(ArnPrefixes::default().arn(
                "arn:aws:ssm:us-east-1:123456789012:parameter/app/db/password".into(),
                "/app/db/password",
            )),
            data_type: Some("text".into()),
            last_modified_date: Timestamp::new(1_668_587_045, 571_000_000),
            name: "/app/db/password".into(),
            extra: None,
            kind: "SecureString".into(),
            value: SecretText::new("hunter2".into()),
            version: 2,
        }
    }

    #[test]
    fn parameter_json_matches_the_aws_layer_field_for_field() {
        let p = parameter();
        let body = serde_json::to_string(&ParameterResponse {
            parameter: &p,
            result_metadata: ResultMetadata::default(),
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"Parameter":{"ARN":"arn:aws:ssm:us-east-1:123456789012:parameter/app/db/password","DataType":"text","LastModifiedDate":"2022-11-16T08:24:05.571Z","Name":"/app/db/password","Selector":null,"SourceResult":null,"Type":"SecureString","Value":"hunter2","Version":2},"ResultMetadata":{}}"#
        );
    }

    #[test]
    fn secret_json_is_flat_with_base64_binary() {
        let s = Secret {
            arn: Some("arn:aws:secretsmanager:us-east-1:1:secret:dev/azure-MFUBmH".into()),
            created_date: Timestamp::new(1_668_586_960, 499_000_000),
            name: Some("dev/azure".into()),
            secret_binary: Some(SecretBytes::new(vec![0, 1, 2])),
            secret_string: None,
            version_id: Some("v1".into()),
            version_stages: Box::new(["AWSCURRENT".into()]),
        };
        let json: serde_json::Value = serde_json::to_value(SecretResponse {
            secret: &s,
            result_metadata: ResultMetadata::default(),
        })
        .unwrap();
        assert_eq!(json["CreatedDate"], "2022-11-16T08:22:40.499Z");
        assert_eq!(json["SecretBinary"], "AAEC");
        assert_eq!(json["SecretString"], serde_json::Value::Null);
        assert_eq!(json["VersionStages"][0], "AWSCURRENT");
        assert_eq!(json["ResultMetadata"], serde_json::json!({}));
    }
}
