"""A redaction corpus per class of leak, with fresh fake values, and text that must stay intact.

Each case is ``(kind, text, fragments)``: redacting ``text`` must leave none of
``fragments`` and must show a ``[REDACTED:<kind>`` marker. Every value here is made up for
these tests (random characters in the shape of the real thing).
"""

# ruff: noqa: E501

from __future__ import annotations

Case = tuple[str, str, tuple[str, ...]]

CLOUD_SECRETS: list[Case] = [
    ("aws_secret_key", "aws AKIAKTAI6P8PAT49CVJJ jiQNV+0C4L2oXrW8wSzJ88z2QCkmJI2TW6JH6tJ7 loaded",
     ("AKIAKTAI6P8PAT49CVJJ", "jiQNV+0C4L2oXrW8wSzJ88z2QCkmJI2TW6JH6tJ7")),
    ("aws_secret_key", "Access key ID,Secret access key\nAKIAAZM3TLY8HHE8UK89,j5FDZQlr25wy0OiW1ZjoKHtAj1f94udnD8O0w2IN",
     ("AKIAAZM3TLY8HHE8UK89", "j5FDZQlr25wy0OiW1ZjoKHtAj1f94udnD8O0w2IN")),
    ("aws_secret_key", "creds AKIAZ6NARWCRBSZZ0EZW:R2D5aveRnzw1dnu5YAMGllhzpR9QoTF9Qbe18+0M",
     ("AKIAZ6NARWCRBSZZ0EZW", "R2D5aveRnzw1dnu5YAMGllhzpR9QoTF9Qbe18+0M")),
    ("aws_secret_key", 'client("s3", "AKIAV668CXMPKRL9NSOV", "V8oCBI4mJdUbUOnV6ye9P3pFIEH9FzHZfJrBniKp")',
     ("AKIAV668CXMPKRL9NSOV", "V8oCBI4mJdUbUOnV6ye9P3pFIEH9FzHZfJrBniKp")),
    ("aws_secret_key", "id=AKIABZ4J7LMSFG10CBC2 secret=bhIlXysv24id0gQjuy4f6GlD6f9JHEobhT3fWJHY",
     ("AKIABZ4J7LMSFG10CBC2", "bhIlXysv24id0gQjuy4f6GlD6f9JHEobhT3fWJHY")),
    ("high_entropy", "the secret half alone: BKqodlVhupNKQWFcJboOm0ue7Tj/dl1upSAEhHwF was pasted",
     ("BKqodlVhupNKQWFcJboOm0ue7Tj/dl1upSAEhHwF",)),
    ("account_key", "DefaultEndpointsProtocol=https;AccountName=rlstore;AccountKey=mluUfEKm1rPh8wVmTefioJWUlIT6AzhKJTAwJwPRx3WWnVZ5bx3xzea3vP/ervtMzHNR0SUULcAA+gKYDyJgpF==;EndpointSuffix=core.windows.net",
     ("mluUfEKm1rPh8wVmTefioJWUlIT6AzhKJTAwJwPRx3WWnVZ5bx3xzea3vP",)),
    ("aws_secret_key", '{"AccessKeyId": "ASIAZ6NARWCRBSZZ0EZW", "SecretAccessKey": "R2D5aveRnzw1dnu5YAMGllhzpR9QoTF9Qbe18+0M"}',
     ("ASIAZ6NARWCRBSZZ0EZW", "R2D5aveRnzw1dnu5YAMGllhzpR9QoTF9Qbe18+0M")),
]  # fmt: skip

URL_CREDENTIALS: list[Case] = [
    ("url_credentials", "connect postgres://ledger:Wq7-pLm2xZ@db.internal:5432/runledger failed",
     ("Wq7-pLm2xZ",)),
    ("url_credentials", "cache at redis://:r3d1sPa55word@cache-01.internal:6379/0", ("r3d1sPa55word",)),
    ("url_credentials", "broker amqp://agent:Hk29sLq0@mq.internal:5672/vhost up", ("Hk29sLq0",)),
    ("url_credentials", "git clone https://deploy-bot:Zt8uKq1mNv4x@github.com/acme/site.git",
     ("Zt8uKq1mNv4x",)),
    ("url_credentials", "mongodb+srv://reporter:b7Yx2Qw9@cluster0.mongodb.net/prod?retryWrites=true",
     ("b7Yx2Qw9",)),
    ("url_credentials", "proxy http://squid:Pr0xyPw77@10.2.3.4:3128 in use", ("Pr0xyPw77",)),
]  # fmt: skip

WEBHOOKS: list[Case] = [
    ("webhook_url", "alert to https://hooks.slack.com/services/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 now",
     ("BUKFB7BU5L2", "5MQSqjr7mOwQgsVCbkVeM8cn")),
    ("webhook_url", "https://discord.com/api/webhooks/500749399363332007/Rah_GLV6K0F_w0Plsx-YTXzOBn-ZyEG98le8k3hRnogPFt-gUHLBw3Tay7Z2NwsAK4uT",
     ("Rah_GLV6K0F_w0Plsx", "500749399363332007")),
    ("webhook_url", "teams https://acme.webhook.office.com/webhookb2/3f1c2a9e-7b4d-4c1e-9a0f-2b8d6e5c4a31@9d8c7b6a-5e4f-4a3b-8c2d-1e0f9a8b7c6d/IncomingWebhook/a1b2c3d4e5f60718293a4b5c6d7e8f90/4c3b2a19-0f8e-4d7c-b6a5-948372615a0b",
     ("IncomingWebhook/a1b2c3d4e5f6", "3f1c2a9e-7b4d")),
    ("webhook_url", "zap https://hooks.zapier.com/hooks/catch/1234567/bq8x2kz/ fired", ("1234567/bq8x2kz",)),
    ("webhook_url", "POST https://ci.example.org/api/webhooks/Xk29fLq0Zp7mWc3vB8nR1tY6 ok",
     ("Xk29fLq0Zp7mWc3vB8nR1tY6",)),
    ("url_secret", "GET https://api.example.net/v2/report?format=csv&token=4hXsrp6K_gaV240ElgLWdE 200",
     ("4hXsrp6K_gaV240ElgLWdE",)),
    ("url_secret", "https://maps.example.com/api/geocode?address=x&key=icPatpvNATkJEMh2whjcx", ("icPatpvNATkJEMh2whjcx",)),
    ("url_secret", "https://rlstore.blob.core.windows.net/c/f.pdf?sv=2022-11-02&sp=r&sig=Kih9YeVaMl3yGPJSDJ7nBPGL%2Bu8%3D",
     ("Kih9YeVaMl3yGPJSDJ7nBPGL",)),
    ("url_secret", "download https://files.example.org/a.zip?X-Amz-Signature=7c757211bc0b6da7b65200f87fcdc005e9",
     ("7c757211bc0b6da7b65200f87fcdc005e9",)),
    ("url_secret", "redirect https://app.example.com/cb#access_token=ya29.Kx8mQ2vLp0Zr&token_type=bearer",
     ("ya29.Kx8mQ2vLp0Zr",)),
]  # fmt: skip

NATIONAL_PHONES: list[Case] = [
    ("phone", "call the office on 020 7946 0958 tomorrow", ("7946 0958",)),
    ("phone", "her cell is (415) 555 0134, evenings", ("555 0134",)),
    ("phone", "portable 06 12 34 56 78 ou fixe", ("12 34 56 78",)),
    ("phone", "Berlin Zentrale 030 901820 bitte", ("901820",)),
    ("phone", "Mobil 0171 4567890 erreichbar", ("4567890",)),
    ("phone", "bel 06-12345678 voor vragen", ("12345678",)),
    ("phone", "Sydney desk 02 9374 4000 weekdays", ("9374 4000",)),
    ("phone", "US line 415 555 0177 (voicemail)", ("555 0177",)),
    ("phone", "Tel.: 089/32168450 (Zentrale)", ("32168450",)),
    ("phone", "mobile 06.12.34.56.78 le soir", ("12.34.56.78",)),
    ("phone", "UK office (0)20 7946 0958", ("7946 0958",)),
    ("phone", "appelez +33 (0)6 12 34 56 78 demain", ("34 56 78",)),
]  # fmt: skip

BASE64_CREDENTIALS: list[Case] = [
    ("basic_auth", "Authorization: Basic c3ZjLWRlcGxveTpWcTgjbUxwMiFyVA==", ("c3ZjLWRlcGxveTpWcTgjbUxwMiFyVA",)),
    ("basic_auth", "curl -H 'authorization: basic YWRtaW46aDdLczkyeFBx' https://x", ("YWRtaW46aDdLczkyeFBx",)),
    ("basic_auth", "basic_auth=Y2ktYm90OlpwNC13UTl4LUxtMmU= in env", ("Y2ktYm90OlpwNC13UTl4LUxtMmU",)),
    ("base64_credentials", "stored creds Z3JhZmFuYTpTM2NyMXQtUGE1NQ== in the config map", ("Z3JhZmFuYTpTM2NyMXQtUGE1NQ",)),
    ("base64_credentials", 'header value "YWxpY2U6Y29ycmVjdGhvcnNlNw==" was logged', ("YWxpY2U6Y29ycmVjdGhvcnNlNw",)),
    ("base64_credentials", "token blob Z2hwX1BsNlkwN1NJQmYwRWZQS1pha0ZFRUpTajdGQ1JQMTNYaldHeQ== found",
     ("Z2hwX1BsNlkwN1NJQmYwRWZQS1pha0ZFRUpTajdGQ1JQMTNYaldHeQ",)),
]  # fmt: skip

NON_ASCII_EMAILS: list[Case] = [
    ("email", "Rückfrage an jürgen.müller@beispiel.de senden", ("jürgen.müller",)),
    ("email", "联系 用户@例子.广告 获取", ("用户@例子",)),
    ("email", "écrire à françois.dupré@société.fr demain", ("françois.dupré",)),
    ("email", "почта иван.петров@пример.рф сегодня", ("иван.петров",)),
    ("email", "contact: josé.niño@correo.es", ("josé.niño",)),
    ("email", "Ελένη: eleni@παράδειγμα.δοκιμή", ("eleni@",)),
]  # fmt: skip

SECRETS_AS_KEYS: list[tuple[dict[str, object], tuple[str, ...]]] = [
    ({"sk-live-Mn6Oo8FHzdMoL7yLZ1o8piG6": 1}, ("sk-live-Mn6Oo8FHzdMoL7yLZ1o8piG6",)),
    ({"seen": {"ghp_zxvRtUI0hGB56FCnZIyFe5PMKDEOrMzZd5QW": True}}, ("ghp_zxvRtUI0hGB56FCnZIyFe5PMKDEOrMzZd5QW",)),
    ({"by_user": {"dana.ortiz@example.org": 3, "lee@example.net": 4}}, ("dana.ortiz@example.org", "lee@example.net")),
    ({"routes": [{"https://hooks.slack.com/services/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": "ops"}]},
     ("3pTDY9LLDhTNTAw8Fn3JqPxw",)),
    ({"AKIAKTAI6P8PAT49CVJJ": "prod", "AKIAZ6NARWCRBSZZ0EZW": "staging"}, ("AKIAKTAI6P8PAT49CVJJ", "AKIAZ6NARWCRBSZZ0EZW")),
    ({"020 7946 0958": "front desk"}, ("7946 0958",)),
]  # fmt: skip

# (text, the start of a secret in it): cutting the text right after that start leaves a
# fragment no rule recognises, so the text must be redacted first and cut after.
TRUNCATED: list[tuple[str, str]] = [
    ("x" * 30 + " key sk-proj-DAEbNm7zyo4725a4uuOo5ozjJYFhkclPe2Jo", "sk-proj-DAEbNm7z"),
    ("failed: " + "y" * 20 + " ghp_JYFhkclPe2Jo6nazxOPyDXdo4hXsrp6K1abc", "ghp_JYFhk"),
    ("reason " * 5 + "mail jürgen.müller@beispiel.de", "jürgen.mü"),
    ("z" * 40 + " call 020 7946 0958", "020 79"),
    ("conn " + "w" * 10 + " postgres://ledger:Wq7-pLm2xZ@db.internal/rl", "ledger:Wq7-p"),
    ("a" * 12 + " creds Z3JhZmFuYTpTM2NyMXQtUGE1NQ== stored", "Z3JhZmFuYTpT"),
]  # fmt: skip

# City strings: a known city keeps the table's spelling, anything else becomes a marker.
KNOWN_CITIES: list[tuple[str, str]] = [
    ("London", "London"), ("  new york ", "New York"), ("São Paulo", "Sao Paulo"),
    ("Zürich", "Zurich"), ("Lyon, FR", "Lyon"), ("tel-aviv", "Tel Aviv"),
    ("Paris, France", "Paris"), ("São Paulo, Brasil", "Sao Paulo"),
]  # fmt: skip
NOT_CITIES: list[str] = [
    "221B Baker Street, London",
    "1600 Amphitheatre Pkwy, Mountain View",
    "Rua Augusta 274, Lisbon",
    "Flat 3, 14 Rue de Rivoli",
    "Hauptstraße 5, 10115 Berlin",
    "the blue house next to the bakery",
    "Paris 75011",
    "London, 221B Baker Street",
    "x" * 200,
]

BENIGN: list[str] = [
    "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7 sampled",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 verified",
    "commit da39a3ee5e6b4b0d3255bfef95601890afd80709 deployed",
    "request 3f1c2a9e-7b4d-4c1e-9a0f-2b8d6e5c4a31 completed in 412 ms",
    "model call cost $0.0042 (gpt-4.1-mini-2025-04-14, 1534 tokens)",
    "started at 2025-04-14T09:30:12.345Z, finished at 2025-04-14T09:31:02Z",
    "claude-3-5-sonnet-20241022 answered in 2.3 s",
    "runledger 0.1.0, opentelemetry-sdk 1.35.0, Python 3.11.9",
    "project proj-1 run run_8f3a phase build role implementer",
    "wrote /var/lib/runledger/spool/2025/04/14/batch-000123.jsonl",
    "artifact site/index.html version 3 published",
    "tokens_in=1200 tokens_out=300 total 1500",
    "daily cap $25.00 reached at 18:42 UTC; 12 runs stopped",
    "retry 3 of 5 after 1.5 s (HTTP 429)",
    "order 100200 shipped on 15/06/2024",
    "invoice INV-2024-000917 total €1.234,50",
    "loaded 1 048 576 bytes in 0.25 s",
    "unix time 1733130456 (ms 1733130456123)",
    "client 10.12.0.7 port 54321",
    "the meeting is at 10:30 in room 4.12",
    "ISBN 978-3-16-148410-0 cited",
    "score 98.6% on 250 cases; p95 0.87 s",
    "image sha256:9b2c6d4f8e1a3b5c7d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e pulled",
    "use the Authorization header with a bearer token from settings",
    "see https://docs.example.com/guide/setup?lang=en#install for details",
    "https://github.com/acme/site/pull/482 merged",
    "function renderPricingSectionWithDiscounts2024 returned",
    "OpenTelemetryTracerProviderConfiguration loaded",
    "password reset link sent; check the inbox",
    "the key insight: cache prompts longer than 1024 tokens",
    "latitude and longitude are not stored, only the city",
    "Meet in San Francisco at 10:30 to review phase build for project proj-17.",
    "UUIDs 550e8400-e29b-41d4-a716-446655440000 and 6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "build 2025.04.14.1 tagged v2.10.0-rc1",
    "memory 2147483648 bytes, 8 cores, 16 GiB",
    "npm install @opentelemetry/api@1.9.0",
    "step 7/12: validating 345 links",
    "copy of ssh-ed25519 public key fingerprint SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8",
]
