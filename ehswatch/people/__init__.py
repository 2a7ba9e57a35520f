"""People who sign in: accounts with argon2id passwords, their sessions, sign-in throttling."""
