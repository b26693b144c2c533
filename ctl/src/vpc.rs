//! `trellisctl vpc`: the VPC-native backend's tools. `max-pods` works offline, from the
//! instance-type table built into trellis-vpc: no datastore, no EC2 call.

use trellis_vpc::limits::{limits_for, table_len};
use trellis_vpc::max_pods::{max_pods, MaxPods, Mode, HIGH_CPU_THRESHOLD};

#[derive(Debug, clap::Subcommand)]
pub enum VpcCommand {
    /// The AWS max-pods formula for an instance type: the value and the one kubelet's
    /// --max-pods should get (capped at 110, or 250 above 30 vCPUs).
    MaxPods {
        /// EC2 instance type, e.g. m5.large.
        #[arg(long)]
        instance_type: String,
        /// ENIs hold /28 prefixes (16 addresses each) instead of secondary addresses.
        #[arg(long)]
        prefix_delegation: bool,
        /// Pods use ENIs in another subnet; the primary ENI hosts none.
        #[arg(long)]
        custom_networking: bool,
    },
}

/// The command's output, or the one-line reason it failed.
pub fn run(command: &VpcCommand) -> anyhow::Result<String> {
    match command {
        VpcCommand::MaxPods {
            instance_type,
            prefix_delegation,
            custom_networking,
        } => {
            let limits = limits_for(instance_type).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown instance type {instance_type:?}: not among the {} types trellis \
                     knows (this command does not ask EC2)",
                    table_len()
                )
            })?;
            let mode = Mode {
                prefix_delegation: *prefix_delegation,
                custom_networking: *custom_networking,
            };
            Ok(render(
                instance_type,
                &max_pods(instance_type, &limits, mode)?,
            ))
        }
    }
}

fn render(instance_type: &str, m: &MaxPods) -> String {
    let mode = match (m.mode.prefix_delegation, m.mode.custom_networking) {
        (false, false) => "secondary IPs",
        (false, true) => "secondary IPs, custom networking",
        (true, false) => "prefix delegation",
        (true, true) => "prefix delegation, custom networking",
    };
    let cap_reason = if m.vcpus > HIGH_CPU_THRESHOLD {
        format!("more than {HIGH_CPU_THRESHOLD} vCPUs")
    } else {
        format!("{HIGH_CPU_THRESHOLD} vCPUs or fewer")
    };
    format!(
        "instance type  {instance_type}\n\
         ENIs           {}\n\
         IPv4 per ENI   {}\n\
         vCPUs          {}\n\
         mode           {mode}\n\
         formula        {}\n\
         \x20              {m}\n\
         max pods       {}\n\
         recommended    {} (cap {}: {cap_reason})\n",
        m.enis,
        m.ipv4_per_eni,
        m.vcpus,
        m.formula_symbols(),
        m.formula,
        m.recommended,
        m.cap,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_pods_of(t: &str, prefix_delegation: bool, custom_networking: bool) -> String {
        run(&VpcCommand::MaxPods {
            instance_type: t.to_string(),
            prefix_delegation,
            custom_networking,
        })
        .map_err(|e| format!("{e:#}"))
        .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn prints_inputs_formula_and_capped_value() {
        assert_eq!(
            max_pods_of("m5.large", false, false),
            "instance type  m5.large\n\
             ENIs           3\n\
             IPv4 per ENI   10\n\
             vCPUs          2\n\
             mode           secondary IPs\n\
             formula        ENIs x (IPv4 per ENI - 1) + 2\n\
             \x20              3 x (10 - 1) + 2 = 29\n\
             max pods       29\n\
             recommended    29 (cap 110: 30 vCPUs or fewer)\n"
        );
        let big = max_pods_of("c5.18xlarge", false, false);
        assert!(big.contains("max pods       737\n"), "{big}");
        assert!(
            big.contains("recommended    250 (cap 250: more than 30 vCPUs)\n"),
            "{big}"
        );
    }

    #[test]
    fn prefix_delegation_and_custom_networking() {
        let out = max_pods_of("m5.large", true, true);
        assert!(out.contains("mode           prefix delegation, custom networking\n"));
        assert!(
            out.contains("(ENIs - 1) x ((IPv4 per ENI - 1) x 16) + 2\n"),
            "{out}"
        );
        assert!(
            out.contains("(3 - 1) x ((10 - 1) x 16) + 2 = 290\n"),
            "{out}"
        );
        assert!(out.contains("recommended    110 (cap 110"), "{out}");
    }

    #[test]
    fn errors_are_one_line_naming_the_cause() {
        assert_eq!(
            max_pods_of("m5.giant", false, false),
            "error: unknown instance type \"m5.giant\": not among the 1263 types trellis knows \
             (this command does not ask EC2)"
        );
        let err = max_pods_of("t2.micro", true, false);
        assert!(
            err.starts_with("error: instance type t2.micro (xen, not bare metal)"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }
}
