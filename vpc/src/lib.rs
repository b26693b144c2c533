//! The VPC-native backend (issue 6): pods get addresses of the node's AWS ENIs instead of
//! blocks of a cluster pool, as with the AWS VPC CNI.
//!
//! ```text
//!  address_book                       the node's ENI addresses and which pod holds each
//!  limits (+ limits_table, generated)   per-instance-type ENI / IPv4-per-ENI limits
//!  max_pods                             the AWS max-pods formula (`trellisctl vpc max-pods`)
//!  warm_pool                            WARM_ENI/IP/PREFIX_TARGET, MINIMUM_IP_TARGET arithmetic
//!  checkpoint                           allocations on disk, written atomically
//!  eni_manager                        the pool owner: assign/release for pods, EC2 steps, leaks
//!  ec2                                  the narrow EC2 interface, over aws-sdk-ec2
//!  imds, imds_server                    IMDSv2 client, and a server for tests and the lab
//! ```

pub mod address_book;
pub mod checkpoint;
pub mod datapath;
pub mod ec2;
pub mod eni_manager;
pub mod fault_proxy;
pub mod imds;
pub mod imds_server;
pub mod limits;
mod limits_table;
pub mod max_pods;
pub mod warm_pool;
