//! Submitted forms (`application/x-www-form-urlencoded`) and the problem found in one, shown
//! next to the field it is about when the form is rendered again.

use crate::admin::ApiError;

/// The fields of a submitted form, in order; a name may repeat (checkboxes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Self {
        Self {
            pairs: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The field's first value, trimmed; empty when absent.
    pub fn value(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.trim())
    }

    /// Every non-empty value of a repeated field.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(n, v)| n == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
            .collect()
    }

    pub fn has(&self, name: &str, value: &str) -> bool {
        self.values(name).contains(&value)
    }

    /// A form pre-filled with these values.
    pub fn with(pairs: impl IntoIterator<Item = (&'static str, String)>) -> Self {
        Self {
            pairs: pairs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
        }
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.pairs.push((name.to_owned(), value.into()));
    }
}

/// Why a submitted form was refused, tied to one of its fields when possible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The form field's name; empty for the form as a whole.
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An API-shaped error (from the model's or the store's validation) placed on a form
    /// field: `field_of` maps the API's field path (`auth.secret`) to the form's (`secret`).
    pub fn from_api(error: &ApiError, field_of: impl Fn(&str) -> &'static str) -> Self {
        let detail = error.detail();
        let field = detail.field.as_deref().map_or("", field_of);
        Self::new(field, detail.message.clone())
    }
}

/// A form as shown again: what was typed and what was wrong with it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Draft {
    pub form: Form,
    pub problem: Option<Problem>,
}

impl Draft {
    pub fn new(form: Form) -> Self {
        Self {
            form,
            problem: None,
        }
    }

    pub fn refused(form: Form, problem: Problem) -> Self {
        Self {
            form,
            problem: Some(problem),
        }
    }

    pub fn value(&self, name: &str) -> &str {
        self.form.value(name)
    }

    pub fn has(&self, name: &str, value: &str) -> bool {
        self.form.has(name, value)
    }

    /// The message for `field`, if the problem is about it.
    pub fn error(&self, field: &str) -> Option<&str> {
        self.problem
            .as_ref()
            .filter(|p| p.field == field)
            .map(|p| p.message.as_str())
    }

    /// A message about no field in particular, or about a field the form does not show
    /// (`fields` lists the ones it does).
    pub fn general_error(&self, fields: &[&str]) -> Option<&str> {
        self.problem
            .as_ref()
            .filter(|p| !fields.contains(&p.field.as_str()))
            .map(|p| p.message.as_str())
    }

    /// `aria-invalid` for a field.
    pub fn invalid(&self, field: &str) -> &'static str {
        if self.error(field).is_some() {
            "true"
        } else {
            "false"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_and_encoded_fields() {
        let form = Form::parse(b"name=a+b&pools=x&pools=y&pools=&url=https%3A%2F%2Fh&empty=");
        assert_eq!(form.value("name"), "a b");
        assert_eq!(form.values("pools"), ["x", "y"]);
        assert_eq!(form.value("url"), "https://h");
        assert_eq!(form.value("missing"), "");
        assert!(form.has("pools", "y") && !form.has("pools", "z"));
    }

    #[test]
    fn problems_land_on_their_field() {
        let draft = Draft::refused(Form::default(), Problem::new("url", "bad URL"));
        assert_eq!(draft.error("url"), Some("bad URL"));
        assert_eq!(draft.error("name"), None);
        assert_eq!(draft.invalid("url"), "true");
        assert_eq!(draft.general_error(&["url", "name"]), None);
        assert_eq!(draft.general_error(&["name"]), Some("bad URL"));
        let api = ApiError::invalid("auth.secret", "not a reference");
        let problem = Problem::from_api(&api, |f| if f == "auth.secret" { "secret" } else { "" });
        assert_eq!(problem, Problem::new("secret", "not a reference"));
    }
}
