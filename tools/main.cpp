#include <cstdio>
int main() { std::puts("hisa: under construction"); return 0; }
