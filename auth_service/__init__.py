"""natter's auth service: users, argon2id passwords, RS256 access tokens, refresh-token sessions,
revocation and the JWKS, served over NATS (docs/subjects.md, DESIGN.md)."""
