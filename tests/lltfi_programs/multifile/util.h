int square(int x);
int sum_of_squares(int n);
