#!/bin/sh
# The job of tutorial-maxcompute.yaml as flags. The AccessKey secret comes
# from MAXCOMPUTE_ACCESS_KEY, the source password from SHARDSYNC_MYSQL_PASSWORD.
set -eu
exec shardsync \
  --sources 'emp_[0-9]+.employees_[0-9]+' \
  --mysql "${MYSQL_HOST}:${MYSQL_PORT}" --mysql-user root --server-id 5400 \
  --sink maxcompute --maxcompute-endpoint "${MAXCOMPUTE_ENDPOINT}" --maxcompute-project "${MAXCOMPUTE_PROJECT}" \
  --maxcompute-access-id "${MAXCOMPUTE_ACCESS_ID}" --maxcompute-buckets 4 --maxcompute-option compress.algorithm=zlib \
  --route 'emp_[0-9]+.employees_[0-9]+=demo.all_employees_info' \
  --name 'emp shards to MaxCompute' --checkpoint-interval 60s \
  "$@"
