//! Dockerfiles for Strata builds: parsing, variable expansion and planning.
//!
//! This crate owns the Dockerfile subset Strata builds: [`parse`] turns text into a
//! [`Dockerfile`] (rejecting what Strata does not support, with the line at fault), and [`plan`]
//! turns that into a [`BuildPlan`]: ARG/ENV expansion, stage references, the steps each stage runs
//! and the image configuration it ends with.
//!
//! It is pure: no I/O, no processes, no filesystem, no clock. What images and runtimes exist comes
//! in through the `resolve` callback; executing a plan (running steps, copying files, caching
//! layers) belongs to the build executor, not here.
//!
//! ```
//! use std::collections::BTreeMap;
//! use strata_dockerfile::{parse, plan, Action, Base};
//! use strata_types::ImageConfig;
//!
//! let df = parse("FROM debian-bookworm AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /\n")?;
//! let resolve = |name: &str| (name == "debian-bookworm").then(ImageConfig::default);
//! let plan = plan(&df, &BTreeMap::new(), &resolve)?;
//! assert_eq!(plan.stages[1].base, Base::Scratch);
//! assert!(matches!(&plan.stages[0].steps[0].action, Action::Run { argv, .. } if argv[2] == "make"));
//! assert_eq!(plan.needed_stages(), vec![0, 1]);
//! # Ok::<(), strata_dockerfile::DockerfileError>(())
//! ```

mod error;
mod parse;
mod plan;
mod words;

pub use error::DockerfileError;
pub use parse::{parse, ArgDecl, Command, CommandLine, CopySpec, Dockerfile, Instruction};
pub use plan::{plan, Action, Base, BuildPlan, CopyFrom, StagePlan, Step};
pub use words::{expand, split_words, ExpandError};
