/* Bitwise CRC-32 (IEEE) of a fixed message; prints it in hex. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static uint32_t crc32(const unsigned char *data, size_t len) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < len; i++) {
    crc ^= data[i];
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

int main(void) {
  const char *msg = "The quick brown fox jumps over the lazy dog";
  printf("%08x\n", crc32((const unsigned char *)msg, strlen(msg)));
  return 0;
}
