//! A GraphQL document read far enough to answer it honestly: one `query` operation, its
//! fields with their arguments and selections. Fragments, directives, aliases and mutations
//! are refused: ao sends none, and a fake that skipped them would answer what it was not asked.

use serde_json::Value;

/// A field of a selection: `name(arg: value, …) { selection }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub args: Vec<(String, Value)>,
    pub selection: Vec<Field>,
}

impl Field {
    /// Argument `name`, as given or taken from the variables.
    pub fn arg(&self, name: &str) -> Option<&Value> {
        self.args
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }
}

/// A `query` operation: its name and its root fields.
#[derive(Debug)]
pub struct Operation {
    pub name: Option<String>,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    Variable(String),
    Str(String),
    Int(i64),
    Punct(char),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ',' {
            chars.next();
        } else if c == '#' {
            while chars.next().is_some_and(|c| c != '\n') {}
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            chars.next();
            let mut name = String::new();
            while let Some(&n) = chars
                .peek()
                .filter(|n| n.is_ascii_alphanumeric() || **n == '_')
            {
                name.push(n);
                chars.next();
            }
            out.push(if c == '$' {
                Token::Variable(name)
            } else {
                Token::Name(format!("{c}{name}"))
            });
        } else if c.is_ascii_digit() || c == '-' {
            chars.next();
            let mut digits = c.to_string();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(d);
                chars.next();
            }
            out.push(Token::Int(
                digits.parse().map_err(|_| format!("bad number {digits}"))?,
            ));
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => s.push(chars.next().ok_or("unterminated string")?),
                    Some(c) => s.push(c),
                    None => return Err("unterminated string".into()),
                }
            }
            out.push(Token::Str(s));
        } else if "{}():!=[]".contains(c) {
            chars.next();
            out.push(Token::Punct(c));
        } else {
            return Err(format!("Syntax Error: Unexpected character \"{c}\"."));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    variables: &'a Value,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Result<Token, String> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token.ok_or_else(|| "Syntax Error: Unexpected <EOF>.".to_string())
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.next()? {
            Token::Punct(p) if p == c => Ok(()),
            other => Err(format!("Syntax Error: Expected \"{c}\", found {other:?}.")),
        }
    }

    fn name(&mut self) -> Result<String, String> {
        match self.next()? {
            Token::Name(n) => Ok(n),
            other => Err(format!("Syntax Error: Expected Name, found {other:?}.")),
        }
    }

    /// `($a: Type!, $b: [Type])`: names and types are not checked, only skipped.
    fn variable_definitions(&mut self) -> Result<(), String> {
        let mut depth = 0;
        loop {
            match self.next()? {
                Token::Punct('(') => depth += 1,
                Token::Punct(')') if depth == 1 => return Ok(()),
                Token::Punct(')') => depth -= 1,
                _ => {}
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        Ok(match self.next()? {
            Token::Variable(name) => self.variables.get(&name).cloned().unwrap_or(Value::Null),
            Token::Str(s) => Value::String(s),
            Token::Int(i) => Value::from(i),
            Token::Name(n) if n == "true" || n == "false" => Value::Bool(n == "true"),
            Token::Name(n) if n == "null" => Value::Null,
            // An enum value, such as `createdAt` of `orderBy`.
            Token::Name(n) => Value::String(n),
            Token::Punct('[') => {
                let mut items = Vec::new();
                while self.peek() != Some(&Token::Punct(']')) {
                    items.push(self.value()?);
                }
                self.next()?;
                Value::Array(items)
            }
            Token::Punct('{') => {
                let mut object = serde_json::Map::new();
                while self.peek() != Some(&Token::Punct('}')) {
                    let key = self.name()?;
                    self.expect(':')?;
                    object.insert(key, self.value()?);
                }
                self.next()?;
                Value::Object(object)
            }
            other => return Err(format!("Syntax Error: Unexpected {other:?}.")),
        })
    }

    fn selection(&mut self) -> Result<Vec<Field>, String> {
        self.expect('{')?;
        let mut fields = Vec::new();
        loop {
            match self.peek() {
                Some(Token::Punct('}')) => {
                    self.next()?;
                    return Ok(fields);
                }
                Some(Token::Name(_)) => {}
                _ => {
                    return Err(format!(
                        "the fake Linear reads plain fields only, not {:?}",
                        self.peek()
                    ))
                }
            }
            let name = self.name()?;
            if self.peek() == Some(&Token::Punct(':')) {
                return Err(format!("the fake Linear does not read aliases (`{name}:`)"));
            }
            let mut args = Vec::new();
            if self.peek() == Some(&Token::Punct('(')) {
                self.next()?;
                while self.peek() != Some(&Token::Punct(')')) {
                    let arg = self.name()?;
                    self.expect(':')?;
                    args.push((arg, self.value()?));
                }
                self.next()?;
            }
            let selection = if self.peek() == Some(&Token::Punct('{')) {
                self.selection()?
            } else {
                Vec::new()
            };
            fields.push(Field {
                name,
                args,
                selection,
            });
        }
    }
}

/// Reads `text` with `variables` bound into the arguments.
///
/// # Errors
/// A sentence as a GraphQL server's validation would say it, for anything but one `query`.
pub fn parse(text: &str, variables: &Value) -> Result<Operation, String> {
    let mut parser = Parser {
        tokens: tokens(text)?,
        at: 0,
        variables,
    };
    let name = match parser.peek() {
        Some(Token::Punct('{')) => None,
        Some(Token::Name(kind)) if kind == "query" => {
            parser.next()?;
            let name = match parser.peek() {
                Some(Token::Name(_)) => Some(parser.name()?),
                _ => None,
            };
            if parser.peek() == Some(&Token::Punct('(')) {
                parser.variable_definitions()?;
            }
            name
        }
        other => {
            return Err(format!(
                "the fake Linear answers queries only, not {other:?}"
            ))
        }
    };
    let fields = parser.selection()?;
    if parser.peek().is_some() {
        return Err("the fake Linear answers one operation per request".into());
    }
    Ok(Operation { name, fields })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_query_is_read_with_its_variables_bound() {
        let op = parse(
            "query Issues($filter: IssueFilter, $first: Int) { issues(filter: $filter, \
             first: $first, orderBy: createdAt) { nodes { identifier labels(first: 5) \
             { nodes { name } } } } }",
            &json!({"filter": {"and": []}, "first": 3}),
        )
        .unwrap();
        assert_eq!(op.name.as_deref(), Some("Issues"));
        let issues = &op.fields[0];
        assert_eq!(issues.arg("filter"), Some(&json!({"and": []})));
        assert_eq!(issues.arg("first"), Some(&json!(3)));
        assert_eq!(issues.arg("orderBy"), Some(&json!("createdAt")));
        let nodes = &issues.selection[0];
        assert_eq!(nodes.selection[1].name, "labels");
        assert!(parse("mutation { issueCreate { success } }", &json!({})).is_err());
        assert!(parse("{ a: viewer { id } }", &json!({})).is_err());
    }
}
