package PAGI::Runner;

use strict;
use warnings;

our $VERSION = '0.003000';

# The runner's name in the 0.001017 releases; everything is inherited.
use parent 'PAGI::Server::Runner';

1;

__END__

=head1 NAME

PAGI::Runner - the earlier name of PAGI::Server::Runner

=head1 SYNOPSIS

    use PAGI::Runner;

    PAGI::Runner->run(@ARGV);

    # or
    my $runner = PAGI::Runner->new(port => 8080);
    $runner->run('./app.pl');

=head1 DESCRIPTION

Code written for releases in which the command line runner was called
C<PAGI::Runner> keeps working: this class is L<PAGI::Server::Runner> under
that name, with the same constructor, options and methods (C<new>, C<run>,
C<parse_options>, C<load_app>, C<load_server>, ...). New code should use
L<PAGI::Server::Runner> directly.

=head1 SEE ALSO

L<PAGI::Server::Runner>, L<pagi-server>

=cut
