#!/usr/bin/env python3
"""Creates an IAM user with full access on a moto server started with INITIAL_NO_AUTH_ACTION_COUNT=3
and prints its access key ID and secret (for the signature tests)."""
import json
import sys

import boto3

iam = boto3.client("iam", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="lifeboat")
iam.put_user_policy(UserName="lifeboat", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="lifeboat")["AccessKey"]
print(key["AccessKeyId"], key["SecretAccessKey"])
