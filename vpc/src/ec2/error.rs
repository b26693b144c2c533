//! [`Ec2Error`]: every EC2 failure, classified by what the ENI manager does about it.

use std::error::Error as StdError;
use std::fmt::Debug;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use super::Operation;

/// An EC2 call that failed. Each variant's text is one line naming the operation, its input
/// and the cause, fit for a node condition or a CNI error message.
///
/// The variants are what the caller acts on: back off ([`Ec2Error::Throttled`]), stop growing
/// the pool ([`Ec2Error::IpLimit`], [`Ec2Error::AttachmentLimit`], [`Ec2Error::SubnetFull`]),
/// forget a resource ([`Ec2Error::NotFound`]), or report ([`Ec2Error::NoCredentials`],
/// [`Ec2Error::Other`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ec2Error {
    #[error("EC2 {operation} ({input}) throttled ({code}): {message}")]
    Throttled {
        operation: Operation,
        input: String,
        code: String,
        message: String,
    },
    #[error("EC2 {operation} ({input}): the ENI has its maximum of IPv4 addresses (PrivateIpAddressLimitExceeded): {message}")]
    IpLimit {
        operation: Operation,
        input: String,
        message: String,
    },
    #[error("EC2 {operation} ({input}): the instance has its maximum of ENIs (AttachmentLimitExceeded): {message}")]
    AttachmentLimit {
        operation: Operation,
        input: String,
        message: String,
    },
    #[error("EC2 {operation} ({input}): the subnet has no free addresses (InsufficientFreeAddressesInSubnet): {message}")]
    SubnetFull {
        operation: Operation,
        input: String,
        message: String,
    },
    #[error("EC2 {operation} ({input}): not found ({code}): {message}")]
    NotFound {
        operation: Operation,
        input: String,
        code: String,
        message: String,
    },
    #[error("EC2 {operation}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or an instance role)")]
    NoCredentials { operation: Operation },
    /// Anything else. `code` is EC2's error code, or one of ours when EC2 never answered:
    /// `Transport` (connection failed), `Timeout`, `Credentials` (a provider failed rather than
    /// found nothing), `InvalidRequest` (the SDK could not build the request), `BadResponse`
    /// (EC2's answer lacked or garbled a field we need), `IncompleteAssignment` (fewer
    /// addresses assigned than asked for), `InvalidCount` (a count beyond EC2's integer).
    #[error("EC2 {operation} ({input}) failed ({code}): {message}")]
    Other {
        operation: Operation,
        input: String,
        code: String,
        message: String,
    },
}

impl Ec2Error {
    /// The operation that failed.
    pub fn operation(&self) -> Operation {
        match self {
            Ec2Error::Throttled { operation, .. }
            | Ec2Error::IpLimit { operation, .. }
            | Ec2Error::AttachmentLimit { operation, .. }
            | Ec2Error::SubnetFull { operation, .. }
            | Ec2Error::NotFound { operation, .. }
            | Ec2Error::NoCredentials { operation }
            | Ec2Error::Other { operation, .. } => *operation,
        }
    }

    /// An error of ours (not an EC2 code) under [`Ec2Error::Other`].
    pub(crate) fn local(operation: Operation, input: &str, code: &str, message: &str) -> Self {
        Ec2Error::Other {
            operation,
            input: input.to_owned(),
            code: code.to_owned(),
            message: one_line(message),
        }
    }
}

/// Classifies EC2's error `code` for `operation` on `input`. Pure, so the table is unit-tested
/// without EC2; the codes are those of the EC2 API error reference.
pub fn classify(operation: Operation, input: &str, code: &str, message: &str) -> Ec2Error {
    let input = input.to_owned();
    let message = one_line(message);
    match code {
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled" => {
            Ec2Error::Throttled {
                operation,
                input,
                code: code.to_owned(),
                message,
            }
        }
        "PrivateIpAddressLimitExceeded" => Ec2Error::IpLimit {
            operation,
            input,
            message,
        },
        "AttachmentLimitExceeded" => Ec2Error::AttachmentLimit {
            operation,
            input,
            message,
        },
        "InsufficientFreeAddressesInSubnet" => Ec2Error::SubnetFull {
            operation,
            input,
            message,
        },
        // `InvalidNetworkInterfaceID.NotFound`, `InvalidAttachmentID.NotFound`,
        // `InvalidSubnetID.NotFound`, `InvalidInstanceID.NotFound`, ...; an unknown instance
        // type is `InvalidInstanceType`.
        _ if code.ends_with(".NotFound") || code == "InvalidInstanceType" => Ec2Error::NotFound {
            operation,
            input,
            code: code.to_owned(),
            message,
        },
        _ => Ec2Error::Other {
            operation,
            input,
            code: code.to_owned(),
            message,
        },
    }
}

/// Turns an SDK failure into an [`Ec2Error`]: service errors by their code, the rest by what
/// kept the request from getting an answer.
pub(crate) fn from_sdk<E, R>(operation: Operation, input: &str, err: SdkError<E, R>) -> Ec2Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: Debug + 'static,
{
    if let SdkError::ServiceError(context) = &err {
        let service = context.err();
        return classify(
            operation,
            input,
            service.code().unwrap_or("Unknown"),
            service.message().unwrap_or(""),
        );
    }
    if let Some(creds) = find_source::<CredentialsError>(&err) {
        return match creds {
            CredentialsError::CredentialsNotLoaded(_) => Ec2Error::NoCredentials { operation },
            other => Ec2Error::local(operation, input, "Credentials", &chain(other)),
        };
    }
    let code = match &err {
        SdkError::TimeoutError(_) => "Timeout",
        SdkError::DispatchFailure(failure) if failure.is_timeout() => "Timeout",
        SdkError::DispatchFailure(_) => "Transport",
        SdkError::ConstructionFailure(_) => "InvalidRequest",
        SdkError::ResponseError(_) => "BadResponse",
        _ => "Unknown",
    };
    Ec2Error::local(operation, input, code, &chain(&err))
}

/// The first error of type `T` in `err`'s source chain.
fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// `err: source: source ...`, skipping links that repeat the previous one.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    one_line(&parts.join(": "))
}

/// Collapses whitespace runs (newlines included) so every message stays on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_classify_by_what_the_manager_does() {
        let op = Operation::AssignPrivateIpAddresses;
        let cases = [
            ("RequestLimitExceeded", "Throttled"),
            ("Throttling", "Throttled"),
            ("PrivateIpAddressLimitExceeded", "IpLimit"),
            ("AttachmentLimitExceeded", "AttachmentLimit"),
            ("InsufficientFreeAddressesInSubnet", "SubnetFull"),
            ("InvalidNetworkInterfaceID.NotFound", "NotFound"),
            ("InvalidAttachmentID.NotFound", "NotFound"),
            ("InvalidSubnetID.NotFound", "NotFound"),
            ("InvalidInstanceType", "NotFound"),
            ("UnauthorizedOperation", "Other"),
            ("InvalidParameterValue", "Other"),
        ];
        for (code, want) in cases {
            let err = classify(op, "eni-1, 5 addresses", code, "msg");
            let got = match &err {
                Ec2Error::Throttled { .. } => "Throttled",
                Ec2Error::IpLimit { .. } => "IpLimit",
                Ec2Error::AttachmentLimit { .. } => "AttachmentLimit",
                Ec2Error::SubnetFull { .. } => "SubnetFull",
                Ec2Error::NotFound { .. } => "NotFound",
                Ec2Error::NoCredentials { .. } => "NoCredentials",
                Ec2Error::Other { .. } => "Other",
            };
            assert_eq!(got, want, "{code}: {err}");
            assert_eq!(err.operation(), op);
        }
    }

    #[test]
    fn messages_are_one_line_and_name_operation_input_and_cause() {
        let err = classify(
            Operation::AttachNetworkInterface,
            "eni-9 to i-1 at device 3",
            "AttachmentLimitExceeded",
            "Interface count 4 exceeds\nthe limit for m5.large",
        );
        let text = err.to_string();
        assert_eq!(
            text,
            "EC2 AttachNetworkInterface (eni-9 to i-1 at device 3): the instance has its maximum \
             of ENIs (AttachmentLimitExceeded): Interface count 4 exceeds the limit for m5.large"
        );
        let other = classify(Operation::DescribeSubnet, "subnet-1", "Weird", "a\r\n  b");
        assert_eq!(
            other.to_string(),
            "EC2 DescribeSubnets (subnet-1) failed (Weird): a b"
        );
        let creds = Ec2Error::NoCredentials {
            operation: Operation::DescribeInstance,
        };
        assert!(!creds.to_string().contains('\n'));
        assert!(creds
            .to_string()
            .starts_with("EC2 DescribeInstances: no AWS credentials"));
    }
}
