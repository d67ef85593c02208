"""Sites: enrollment tokens, certificates, revocation, presence."""
