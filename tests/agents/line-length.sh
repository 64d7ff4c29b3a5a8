#!/bin/sh
# A scripted agent that prints the length of each line it reads, so a test
# can tell a long line arrived whole. The terminal is put out of canonical
# mode: in it the kernel keeps at most 4095 bytes of one line.
stty -icanon
echo "counting lines"
while true; do
  printf '> '
  IFS= read -r line || exit 0
  echo "length: ${#line} ends: $(printf '%s' "$line" | tail -c 12)"
done
