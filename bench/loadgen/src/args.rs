//! Hand-rolled command-line parsing: `--key value` or `--key=value` pairs.

use std::collections::HashMap;
use std::str::FromStr;

/// Parsed `--key value` options of one mode.
#[derive(Debug)]
pub struct Opts {
    mode: &'static str,
    values: HashMap<String, String>,
}

impl Opts {
    /// Parses `args` (after the mode word), accepting only keys in `known`.
    pub fn parse(
        mode: &'static str,
        args: &[String],
        known: &[&'static str],
    ) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(format!("{mode}: unexpected argument {arg:?}"));
            };
            let (key, value) = match flag.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => {
                    let v = it
                        .next()
                        .ok_or_else(|| format!("{mode}: --{flag} needs a value"))?;
                    (flag.to_string(), v.clone())
                }
            };
            if !known.contains(&key.as_str()) {
                return Err(format!(
                    "{mode}: unknown option --{key} (known: --{})",
                    known.join(", --")
                ));
            }
            if values.insert(key.clone(), value).is_some() {
                return Err(format!("{mode}: --{key} given twice"));
            }
        }
        Ok(Self { mode, values })
    }

    /// Whether `--key` was given.
    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// The value of `--key` parsed as `T`, or `default` when absent.
    pub fn get_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.values.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{}: bad value for --{key}: {v:?}", self.mode)),
        }
    }

    /// The value of `--key` parsed as `T`; an error when absent.
    pub fn get<T: FromStr>(&self, key: &str) -> Result<T, String> {
        match self.values.get(key) {
            None => Err(format!("{}: --{key} is required", self.mode)),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{}: bad value for --{key}: {v:?}", self.mode)),
        }
    }
}
