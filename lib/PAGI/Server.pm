package PAGI::Server;
use strict; use warnings;
our $VERSION = '0.003000';
require XSLoader;
XSLoader::load('PAGI::Server', $VERSION);
1;
