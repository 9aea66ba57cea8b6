/* LLFI-era K&R C: old-style definitions, implicit int, an implicitly declared atoi. */
#include <stdio.h>

min(a, b)
int a, b;
{
    return a < b ? a : b;
}

main(argc, argv)
int argc;
char **argv;
{
    int i, m;
    m = atoi(argv[1]);
    for (i = 2; i < argc; i++)
        m = min(m, atoi(argv[i]));
    printf("min = %d\n", m);
    return 0;
}
