#!/usr/bin/env bash
# The secrets of deploy/compose.sasl.yml, made once on the Docker host:
#   - a CA, and the broker's key and certificate (names kafka, localhost, 127.0.0.1 and
#     $LOANSTREAM_EXTERNAL_HOST if set) in a PKCS12 keystore;
#   - a random password for the broker's `admin` and for each service principal;
#   - the broker's JAAS file (its user list), admin.properties for the Kafka tools;
#   - sasl.env, the passwords compose reads with --env-file;
#   - the CA certificate again in deploy/certs/ca.pem, where the LoanStream containers find it.
# Usage: deploy/kafka/make-secrets.sh [OUT_DIR] (default deploy/kafka/secrets). Refuses to
# overwrite: delete the folder to make new secrets, then restart the broker.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/secrets}"
CERTS="${LOANSTREAM_CERTS_OUT:-$HERE/../certs}"
# One principal per service, and `topics` for the one-shot job that creates the topics
# (deploy/kafka/kafka-acls.sh grants each what it needs; `admin` is the broker's super user).
PRINCIPALS=(topics producer scorer monitor trainer notifier)
DAYS=825

if [[ -e "$OUT/sasl.env" ]]; then
  echo "$OUT/sasl.env exists: delete $OUT to make new secrets" >&2
  exit 1
fi
command -v openssl >/dev/null || { echo "make-secrets.sh needs openssl" >&2; exit 1; }
mkdir -p "$OUT" "$CERTS"
umask 077
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

password() { openssl rand -hex 24; }  # hex: safe inside JAAS quotes and property files

# CA and broker certificate (EC P-256, SHA-256).
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
  -days "$DAYS" -subj "/CN=LoanStream Kafka CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$work/ca.key" -out "$OUT/ca.pem" 2>/dev/null
names="DNS:kafka,DNS:localhost,IP:127.0.0.1"
if [[ -n "${LOANSTREAM_EXTERNAL_HOST:-}" ]]; then
  if [[ "$LOANSTREAM_EXTERNAL_HOST" =~ ^[0-9.]+$ ]]; then
    names="$names,IP:$LOANSTREAM_EXTERNAL_HOST"
  else
    names="$names,DNS:$LOANSTREAM_EXTERNAL_HOST"
  fi
fi
cat > "$work/broker.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$names
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
  -subj "/CN=kafka" -keyout "$work/broker.key" -out "$work/broker.csr" 2>/dev/null
openssl x509 -req -in "$work/broker.csr" -CA "$OUT/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -CAserial "$work/ca.srl" -days "$DAYS" -sha256 -extfile "$work/broker.ext" \
  -out "$work/broker.pem" 2>/dev/null
keystore_password="$(password)"
openssl pkcs12 -export -name kafka -in "$work/broker.pem" -inkey "$work/broker.key" \
  -certfile "$OUT/ca.pem" -passout "pass:$keystore_password" -out "$OUT/kafka.keystore.p12"

# Passwords, the broker's user list, the tools' client settings, compose's env file.
admin_password="$(password)"
{
  echo "# The passwords of deploy/compose.sasl.yml: docker compose --env-file $OUT/sasl.env ..."
  echo "LOANSTREAM_KAFKA_KEYSTORE_PASSWORD=$keystore_password"
} > "$OUT/sasl.env"
users="    user_admin=\"$admin_password\""
for principal in "${PRINCIPALS[@]}"; do
  secret="$(password)"
  users="$users"$'\n'"    user_$principal=\"$secret\""
  echo "LOANSTREAM_SASL_${principal^^}_PASSWORD=$secret" >> "$OUT/sasl.env"
done
cat > "$OUT/kafka_server_jaas.conf" <<JAAS
KafkaServer {
    org.apache.kafka.common.security.plain.PlainLoginModule required
    username="admin"
    password="$admin_password"
$users;
};
JAAS
cat > "$OUT/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin_password";
ssl.truststore.type=PEM
ssl.truststore.location=/etc/kafka/secrets/ca.pem
PROPS

# The broker (and the kafka-acls job) run as uid 1000 (appuser) and read these files through a
# bind mount. Made by uid 1000 they stay private; otherwise they must be readable by all, and
# on a host shared with other users they should be given to uid 1000 (needs root).
secret_files=("$OUT"/kafka.keystore.p12 "$OUT"/kafka_server_jaas.conf "$OUT"/admin.properties)
if [[ "$(id -u)" == 1000 ]]; then
  chmod 600 "${secret_files[@]}" && chmod 700 "$OUT"
else
  chmod 644 "${secret_files[@]}" && chmod 711 "$OUT"
  echo "the broker (uid 1000) must read $OUT: its files are readable by all users of this" \
    "host; on a shared host run: sudo chown -R 1000 $OUT && sudo chmod 600 $OUT/*.p12" \
    "$OUT/*.conf $OUT/*.properties" >&2
fi
chmod 644 "$OUT/ca.pem"
chmod 600 "$OUT/sasl.env"  # read by docker compose, as you
cp "$OUT/ca.pem" "$CERTS/ca.pem" && chmod 644 "$CERTS/ca.pem"
echo "secrets in $OUT; CA certificate in $CERTS/ca.pem"
