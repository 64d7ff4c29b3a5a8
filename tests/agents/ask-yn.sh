#!/bin/sh
# A scripted agent that asks a human a yes/no question before going on.
echo "planning the change"
printf 'Apply the change to 3 files? (y/n) '
IFS= read -r answer
echo "answer: $answer"
while true; do
  printf '> '
  IFS= read -r line || exit 0
  echo "got: $line"
done
