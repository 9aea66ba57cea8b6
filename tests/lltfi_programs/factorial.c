/* LLFI's sample style: factorial of the number given on the command line. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char *argv[]) {
  int i, n;
  long long fact = 1;
  if (argc < 2) {
    printf("usage: factorial N\n");
    return 1;
  }
  n = atoi(argv[1]);
  for (i = 1; i <= n; i++)
    fact = fact * i;
  printf("%lld\n", fact);
  return 0;
}
