"""Secrets and personal data the SDK must never let out, and text it must leave alone."""

# ruff: noqa: E501

from __future__ import annotations

# Each entry: (kind, text holding exactly one sensitive value, the sensitive value itself).
SECRETS: list[tuple[str, str, str]] = [
    ("openai_key", "use key sk-proj-Qw3rTy9UiOp4AsDfGhJkL1ZxCvBnM0qW please",
     "sk-proj-Qw3rTy9UiOp4AsDfGhJkL1ZxCvBnM0qW"),
    ("openai_key", "OPENAI_API_KEY sk-a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6", "sk-a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"),
    ("anthropic_key", "anthropic sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx-12345_678",
     "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx-12345_678"),
    ("aws_access_key", "aws id AKIAIOSFODNN7EXAMPLE in config", "AKIAIOSFODNN7EXAMPLE"),
    ("github_token", "token ghp_1A2b3C4d5E6f7G8h9I0j1K2l3M4n5O6p7Q8r used",
     "ghp_1A2b3C4d5E6f7G8h9I0j1K2l3M4n5O6p7Q8r"),
    ("slack_token", "slack xoxb-2048-1234567890-AbCdEfGhIjKl posted", "xoxb-2048-1234567890-AbCdEfGhIjKl"),
    ("jwt", "session eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
            "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c end",
     "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
     "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
    ("bearer_token", "Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0", "9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
    ("private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4mYsecretKEYmaterial\n"
                    "-----END RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEAx4mYsecretKEYmaterial"),
    ("private_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAkeymaterial\n"
                    "-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAAkeymaterial"),
    ("password", "db password=Tr0ub4dor3x ok", "Tr0ub4dor3x"),
    ("password", 'config {"password": "correct-horse-battery"}', "correct-horse-battery"),
    ("api_key", "api_key: zq81ksl02mmx3", "zq81ksl02mmx3"),
    ("client_secret", "client_secret='Cl13ntS3cr3tV4lu3'", "Cl13ntS3cr3tV4lu3"),
    ("email", "write to jane.doe+agents@example.co.uk today", "jane.doe+agents@example.co.uk"),
    ("phone", "call +1 415 555 2671 now", "415 555 2671"),
    ("phone", "or (415) 555-0199 at work", "555-0199"),
    ("phone", "UK +44 20 7946 0958 office", "7946 0958"),
    ("card_number", "visa 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
    ("card_number", "mc 5555555555554444 charged", "5555555555554444"),
    ("card_number", "amex 3782-822463-10005 charged", "3782-822463-10005"),
    ("coordinates", "pickup at 37.774929, -122.419416 now", "37.774929"),
    ("coordinates", "lat=51.507351 lon=-0.127758", "51.507351"),
    ("coordinates", '{"latitude": 48.856613, "longitude": 2.352222}', "48.856613"),
    ("aws_secret_key", "aws AKIAV668CXMPKRL9NSOV V8oCBI4mJdUbUOnV6ye9P3pFIEH9FzHZfJrBniKp loaded",
     "V8oCBI4mJdUbUOnV6ye9P3pFIEH9FzHZfJrBniKp"),
    ("url_credentials", "connect postgres://ledger:Wq7-pLm2xZ@db.internal:5432/runledger failed", "Wq7-pLm2xZ"),
    ("webhook_url", "alert https://hooks.slack.com/services/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 sent",
     "5MQSqjr7mOwQgsVCbkVeM8cn"),
    ("url_secret", "GET https://api.example.net/v2/report?token=4hXsrp6K_gaV240ElgLWdE ok", "4hXsrp6K_gaV240ElgLWdE"),
    ("phone", "her cell is (415) 555 0134, evenings", "555 0134"),
    ("phone", "portable 06 12 34 56 78 ou fixe", "12 34 56 78"),
    ("basic_auth", "Authorization: Basic c3ZjLWRlcGxveTpWcTgjbUxwMiFyVA==", "c3ZjLWRlcGxveTpWcTgjbUxwMiFyVA"),
    ("base64_credentials", "stored creds Z3JhZmFuYTpTM2NyMXQtUGE1NQ== in the map", "Z3JhZmFuYTpTM2NyMXQtUGE1NQ"),
    ("email", "Rückfrage an jürgen.müller@beispiel.de senden", "jürgen.müller@beispiel.de"),
]  # fmt: skip

ORDINARY = [
    "Build the landing page for release 2.10.0-rc1 by 2024-06-30 12:45:00 UTC.",
    "run 550e8400-e29b-41d4-a716-446655440000 used 1534 tokens in 3.2 seconds (p95 0.87).",
    "The invoice total is $1,234.56 for 12 items; order #100200 shipped on 15/06/2024.",
    "Python 3.11.7, OpenTelemetry 1.45.2, protobuf 7.36.2; retry 3 of 5.",
    "tokens_in=1200 tokens_out=300 max_tokens=4096 temperature=0.7",
    "Version 1.2.3.4 of the model scored 98.6% on 250 cases; see section 4.1.",
    "Meet in San Francisco at 10:30 to review phase build for project proj-17.",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7, request 3f1c2a9e-7b4d-4c1e-9a0f-2b8d6e5c4a31",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 at 2025-04-14T09:30:12.345Z",
    "model call cost $0.0042 (gpt-4.1-mini-2025-04-14, 1534 tokens), run run_8f3a",
    "wrote /var/lib/agents/site/index.html (12 480 bytes) in 0.25 s",
]

FORBIDDEN = [value for _, _, value in SECRETS]
"""Fragments that must not appear anywhere the SDK sends data."""
